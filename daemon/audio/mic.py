"""The live microphone: PortAudio input, resampled to the pipeline's rate, cut into frames.

Frames reach the owner on the event loop: the PortAudio callback thread converts and
re-blocks the audio, then hands each batch of frames to the loop with one
``loop.call_soon_threadsafe`` (the one bridge); ``on_frame(frame, t)`` runs there.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from daemon.audio import portaudio
from daemon.audio.live import LiveDevice, MessageCallback
from daemon.audio.portaudio import DeviceChoice
from daemon.audio.resampler import StreamResampler
from daemon.config import AudioConfig

_LOGGER = logging.getLogger(__name__)

FRAME_SAMPLES = 512            # 32 ms at 16 kHz: one Silero VAD window
# A frame whose peak stays below this is digital silence (a muted or idle source): speech
# never gets near -65 dBFS.
SILENT_PEAK = 10 ** (-65 / 20)
# While the owner is idle, digitally silent frames reach the loop in batches this long:
# fewer wake-ups for an idle service; the first frame with any sound goes at once.
QUIET_BATCH_S = 0.25
FrameCallback = Callable[[np.ndarray, float], None]


def is_digital_silence(frame: np.ndarray) -> bool:
    """True when the frame's peak stays below :data:`SILENT_PEAK` (no sound at all)."""
    return float(np.max(np.abs(frame))) < SILENT_PEAK


class Microphone(LiveDevice):
    """``audio.input`` as a stream of ``frame_samples``-sample float32 mono frames.

    ``on_frame(frame, t)`` is called on the event loop; ``t`` is the ``time.monotonic()``
    at which the frame's first sample was captured (PortAudio's ADC time where it reports a
    sane one, else the callback time minus the stream's latency).

    The stream opens at ``audio.sample_rate`` when the device accepts it (PulseAudio and
    PipeWire convert in the server), else at the device's native rate, converted here;
    ``device_rate`` forces a rate. Missing or vanished devices: see :class:`LiveDevice`.
    """

    role = "microphone"

    def __init__(self, cfg: AudioConfig, on_frame: FrameCallback,
                 on_error: MessageCallback | None = None,
                 on_recovered: MessageCallback | None = None, *,
                 device: str | None = None, device_rate: int | None = None,
                 frame_samples: int = FRAME_SAMPLES, stall_s: float = 2.0) -> None:
        super().__init__(device if device is not None else cfg.input, "input",
                         cfg.reconnect_s, on_error, on_recovered, stall_s)
        self.sample_rate = cfg.sample_rate
        self.frame_samples = frame_samples
        self._on_frame = on_frame
        self._device_rate = device_rate
        self._convert = _Reframer(self.sample_rate, self.sample_rate, frame_samples)
        self._clock = _SampleClock(self.sample_rate)
        self.stream_rate = 0           # the rate the open stream runs at (0 when closed)
        self.frames_delivered = 0
        # Asked from PortAudio's thread: may silent frames wait for a batch (see QUIET_BATCH_S)?
        self.idle_check: Callable[[], bool] | None = None
        self._quiet: list[tuple[np.ndarray, float]] = []
        self._quiet_since = 0.0
        self._overruns = _OverrunLog()

    def _open(self, choice: DeviceChoice) -> Any:
        """Open and start the input stream (worker thread)."""
        rate = self._device_rate or portaudio.pick_rate(choice, self.sample_rate, 1)
        self._convert = _Reframer(rate, self.sample_rate, self.frame_samples)
        self._clock = _SampleClock(rate)
        self._quiet = []
        generation = self._generation
        stream = portaudio.open_stream(
            choice, samplerate=rate, channels=1, dtype="float32",
            blocksize=max(1, round(self.frame_samples * rate / self.sample_rate)),
            latency="low",
            callback=lambda data, n, t, status: self._callback(generation, data, t, status),
            finished_callback=lambda: self._finished(generation),
        )
        portaudio.start_stream(stream)
        self.stream_rate = rate
        return stream

    def _callback(self, generation: int, data: np.ndarray, tinfo: Any, status: Any) -> None:
        """PortAudio's thread: convert, re-block, and post whole frames to the loop."""
        now = time.monotonic()
        self._alive_at = now
        if status:
            self._overruns.note(now, status)
        lag = tinfo.currentTime - tinfo.inputBufferAdcTime
        if not 0.0 <= lag < 1.0 or tinfo.inputBufferAdcTime == 0.0:
            lag = self._stream.latency if self._stream is not None else 0.0
        frames = self._convert.push(data[:, 0], self._clock.date(now - lag, len(data)))
        if not frames:
            return
        if self._quiet_frames(frames) and self.idle_check is not None and self.idle_check():
            if not self._quiet:
                self._quiet_since = now
            self._quiet.extend(frames)
            if now - self._quiet_since < QUIET_BATCH_S:
                return
            frames = []
        if self._quiet:
            frames, self._quiet = self._quiet + frames, []
        self.post(self._deliver, generation, frames)

    @staticmethod
    def _quiet_frames(frames: list[tuple[np.ndarray, float]]) -> bool:
        return all(is_digital_silence(frame) for frame, _ in frames)

    def _deliver(self, generation: int, frames: list[tuple[np.ndarray, float]]) -> None:
        if generation != self._generation or not self._running:
            return
        for frame, t in frames:
            self.frames_delivered += 1
            try:
                self._on_frame(frame, t)
            except Exception:  # noqa: BLE001 - the owner's bug must not stop the microphone
                _LOGGER.exception("on_frame failed")

    def _on_closed(self) -> None:
        self.stream_rate = 0


class _OverrunLog:
    """Warns (at most every ``every_s``) when PortAudio reports lost input: the callback ran
    too late, so a piece of what was said never reached the VAD."""

    def __init__(self, every_s: float = 10.0) -> None:
        self._every = every_s
        self._count = 0
        self._last = -every_s

    def note(self, now: float, status: Any) -> None:
        if not getattr(status, "input_overflow", False):
            _LOGGER.debug("microphone status: %s", status)
            return
        self._count += 1
        if now - self._last >= self._every:
            _LOGGER.warning("microphone overrun: input audio was lost (%d time(s)); the "
                            "machine may be too busy to read the microphone in time", self._count)
            self._last, self._count = now, 0


class _SampleClock:
    """Dates blocks by counting samples, so frame times advance exactly 32 ms apiece.

    Callback times jitter by several ms; the count does not. The estimate follows the
    measured times slowly (sound-card clock drift) and jumps when they part by more than
    50 ms (an overrun lost audio).
    """

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._anchor: float | None = None
        self._count = 0

    def date(self, measured: float, samples: int) -> float:
        """The capture time of a block's first sample, given its jittery measurement."""
        if self._anchor is None:
            self._anchor = measured
        estimate = self._anchor + self._count / self._rate
        error = measured - estimate
        if abs(error) > 0.05:
            self._anchor += error
            estimate = measured
        else:
            self._anchor += 0.01 * error
        self._count += samples
        return estimate


class _Reframer:
    """Resample a device's blocks to the pipeline rate and cut them into fixed frames."""

    def __init__(self, src_rate: int, dst_rate: int, frame_samples: int) -> None:
        self._resampler = StreamResampler(src_rate, dst_rate)
        self._rate = dst_rate
        self._size = frame_samples
        self._pending = np.zeros(0, dtype=np.float32)
        self._lock = threading.Lock()

    def push(self, block: np.ndarray, t_block: float) -> list[tuple[np.ndarray, float]]:
        """Add a block whose first sample was captured at ``t_block``; return whole frames."""
        with self._lock:
            out = self._resampler.process(block)
            # The pending samples come just before this block: date the buffer's start.
            t0 = t_block - self._pending.size / self._rate
            buf = np.concatenate([self._pending, out]) if self._pending.size else out
            count = buf.size // self._size
            frames = [
                (buf[i * self._size:(i + 1) * self._size].copy(), t0 + i * self._size / self._rate)
                for i in range(count)
            ]
            self._pending = buf[count * self._size:].copy()
            return frames
