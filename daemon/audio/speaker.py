"""The live speaker: tagged chunks queued, played from PortAudio's callback, stoppable at once.

The output stream runs for as long as the speaker is started (writing silence when idle,
in 10 ms blocks: ~1.2% of a core), so a reply starts without opening a stream. (20 ms blocks
cost less, but on ALSA's pulse plugin their callbacks came in bursts the pacer below then
throttled: replies played slower than real time.) A fresh stream on a PulseAudio
sink that had no other input may get no callbacks for up to 2 s and then race to refill its
buffer, discarding what it is given; :class:`_Pacer` holds the queue back until the stream
runs at real time, and keeping the stream open means this happens once, at start-up.

``stop_now()`` (barge-in) drops the queue at once; what the device already holds (~25 ms
through PulseAudio at ``latency="low"``) still plays out. Aborting the stream would drop
that too, but ALSA's pulse plugin then underruns in a loop after the restart, so it is not
done. ``stop_now()`` reports how much of each tag was heard: the controller keeps only that
part of the reply in the history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import numpy as np

from daemon.audio import portaudio
from daemon.audio.live import LiveDevice, MessageCallback
from daemon.audio.playqueue import PlayQueue, QueuedOutput
from daemon.audio.portaudio import DeviceChoice
from daemon.config import AudioConfig

_LOGGER = logging.getLogger(__name__)

TimeCallback = Callable[[float], None]


class Speaker(LiveDevice, QueuedOutput):
    """``audio.output`` as a queue of tagged float32 chunks at any sample rate.

    ``play(samples, sample_rate, tag)``, ``stop_now()``, ``played_tags()``, ``wait_done()``
    and ``is_playing`` come from :class:`QueuedOutput`. ``on_first_audio(t)`` runs on the
    event loop whenever audio starts after silence; ``t`` is the ``time.monotonic()`` at
    which its first sample is due at the DAC (for latency measurement). The stream runs at
    the device's native rate (``device_rate`` overrides); chunks are converted on the way
    in. Missing or vanished devices: see :class:`LiveDevice` (chunks played while
    disconnected are dropped and count as not heard).
    """

    role = "speaker"

    def __init__(self, cfg: AudioConfig, on_first_audio: TimeCallback | None = None,
                 on_error: MessageCallback | None = None,
                 on_recovered: MessageCallback | None = None, *,
                 device: str | None = None, device_rate: int | None = None,
                 block_ms: float = 10.0, latency: float | str = "low",
                 stall_s: float = 2.0) -> None:
        super().__init__(device if device is not None else cfg.output, "output",
                         cfg.reconnect_s, on_error, on_recovered, stall_s)
        self._on_first_audio = on_first_audio
        self._device_rate = device_rate
        self._block_ms = block_ms
        self._latency = latency
        self._queue = PlayQueue(device_rate or 48000)
        self._ran_dry = asyncio.Event()
        self._pacer = _Pacer(device_rate or 48000)
        self.stream_rate = 0

    def _open(self, choice: DeviceChoice) -> Any:
        """Open and start the output stream (worker thread)."""
        rate = self._device_rate or choice.default_rate
        if self._queue.rate != rate:
            self._queue = PlayQueue(rate)
        generation = self._generation
        self._pacer = _Pacer(rate)
        stream = portaudio.open_stream(
            choice, samplerate=rate, channels=1, dtype="float32",
            blocksize=max(1, round(rate * self._block_ms / 1000)), latency=self._latency,
            callback=lambda out, n, t, status: self._callback(generation, out, t, status),
            finished_callback=lambda: self._finished(generation),
        )
        portaudio.start_stream(stream)
        self.stream_rate = rate
        return stream

    def _callback(self, generation: int, out: np.ndarray, tinfo: Any, status: Any) -> None:
        """PortAudio's thread: hand out the next block."""
        now = time.monotonic()
        self._alive_at = now
        lag = tinfo.outputBufferDacTime - tinfo.currentTime
        if not 0.0 <= lag < 1.0 or tinfo.outputBufferDacTime == 0.0:
            lag = self._stream.latency if self._stream is not None else 0.0
        queue = self._queue
        had = queue.pending
        if not self._pacer.allow(now, len(out)):
            out.fill(0.0)       # the device is racing (see _Pacer): keep the audio for later
            return
        _, started = queue.pull(out[:, 0], now + lag)
        if started is not None and self._on_first_audio is not None:
            self.post(self._first_audio, generation, started)
        if had and not queue.pending:
            self.post(self._ran_dry.set)

    def _first_audio(self, generation: int, t: float) -> None:
        if generation == self._generation and self._on_first_audio is not None:
            self._on_first_audio(t)

    def _on_closed(self) -> None:
        self.stream_rate = 0
        self._queue.drop()
        self._ran_dry.set()


class _Pacer:
    """Hands audio to the device no faster than real time.

    A freshly opened stream on ALSA's pulse plugin sometimes races for up to a second:
    PortAudio calls back 12-14 times faster than real time and the audio is thrown away
    (measured: 6 of 12 fresh streams lost 30-100% of a 1 s chunk). A token bucket
    charged for every block, audio or silence, catches that; while it is empty the
    callback writes silence and leaves the queue alone. It refills a quarter faster than
    real time: refilled at exactly the stream's rate, a stream that had raced (or filled
    its buffer at open) and then called back at real-time pace never got out of debt, and
    the speaker stayed silent for good. Now the debt (at most half the burst) is paid off
    within about a quarter of a second of real-time callbacks.
    """

    REFILL = 1.25        # refill rate, as a multiple of real time

    def __init__(self, rate: int, burst_s: float = 0.1) -> None:
        self._rate = rate
        self._cap = rate * burst_s
        self._credit = self._cap
        self._last: float | None = None

    def allow(self, now: float, frames: int) -> bool:
        if self._last is not None:
            self._credit = min(self._cap, self._credit + (now - self._last) * self._rate * self.REFILL)
        self._last = now
        ok = self._credit >= frames * 0.5
        self._credit = max(-self._cap / 2, self._credit - frames)
        return ok
