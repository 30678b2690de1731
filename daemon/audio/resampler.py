"""A streaming resampler: the device callbacks convert block by block without clicks.

:func:`daemon.audio.fileio.resample` converts whole arrays; a live stream needs the filter's
history carried from one block to the next, which :class:`StreamResampler` keeps.
"""

from __future__ import annotations

import math

import numpy as np

_ZEROS = 10           # sinc zero crossings on each side of the kernel
_KAISER_BETA = 8.0    # ~ -75 dB stop band
_MAX_PHASES = 2000    # rates whose reduced ratio needs more branches are refused


class StreamResampler:
    """Band-limited rational resampling (windowed sinc, polyphase) that keeps state.

    Output sample ``k`` lines up with input time ``k * src_rate / dst_rate``; half a kernel
    of input (under 1 ms) is held back as look-ahead until the next block.
    Not thread-safe: one producer feeds it.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        g = math.gcd(int(src_rate), int(dst_rate))
        self.src_rate, self.dst_rate = int(src_rate), int(dst_rate)
        self.up, self.down = self.dst_rate // g, self.src_rate // g
        if self.up > _MAX_PHASES:
            raise ValueError(f"cannot resample {src_rate} Hz -> {dst_rate} Hz (ratio too fine)")
        self.passthrough = self.up == self.down
        self._cutoff = 0.92 * min(1.0, self.up / self.down)   # of the input Nyquist
        self._half = int(math.ceil(_ZEROS / self._cutoff))
        self._taps = 2 * self._half
        self._branches = _branches(self.up, self._cutoff, self._half)
        self.reset()

    def reset(self) -> None:
        """Forget the history (after a gap in the stream)."""
        self._history = np.zeros(self._taps - 1, dtype=np.float32)
        # Start half a kernel late so output k is centred on input k*down/up (no delay).
        self._t = self._half * self.up

    def process(self, block: np.ndarray) -> np.ndarray:
        """Resample the next block of float32 mono samples; returns what is ready."""
        x = np.asarray(block, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return x.copy()
        buf = np.concatenate([self._history, x])
        limit = x.size * self.up          # outputs need input index t // up < x.size
        count = max(0, -(-(limit - self._t) // self.down))
        if count:
            t = self._t + self.down * np.arange(count, dtype=np.int64)
            base, phase = np.divmod(t, self.up)
            windows = np.lib.stride_tricks.sliding_window_view(buf, self._taps)[base]
            out = np.einsum("ij,ij->i", windows, self._branches[phase]).astype(np.float32)
        else:
            out = np.zeros(0, dtype=np.float32)
        self._t += count * self.down - limit
        self._history = buf[-(self._taps - 1):].copy()
        return out

    def flush(self) -> np.ndarray:
        """Push the held-back look-ahead through (end of a stream); then :meth:`reset`."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        tail = self.process(np.zeros(self._half, dtype=np.float32))
        self.reset()
        return tail


def _branches(up: int, cutoff: float, half: int) -> np.ndarray:
    """Polyphase matrix ``(up, 2 * half)``: row p weights a window of input ending at ``t // up``.

    Each row is normalised to sum 1 so that DC passes unchanged at every phase.
    """
    taps = 2 * half
    j = np.arange(taps)[None, :]               # window position, oldest first
    p = np.arange(up)[:, None]
    # The window's last sample is input t // up; its distance to the output instant
    # (input time t / up minus half a kernel of look-ahead) in input samples:
    dist = (taps - 1 - j) + p / up - half
    ratio = np.clip(dist / half, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    h = cutoff * np.sinc(cutoff * dist) * window
    h /= h.sum(axis=1, keepdims=True)
    return h.astype(np.float32)


def resample_once(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a whole array with the streaming filter (same filter as live audio)."""
    if src_rate == dst_rate:
        return np.asarray(samples, dtype=np.float32).reshape(-1).copy()
    r = StreamResampler(src_rate, dst_rate)
    out = np.concatenate([r.process(samples), r.flush()])
    expected = int(round(np.asarray(samples).size * dst_rate / src_rate))
    return out[:expected]
