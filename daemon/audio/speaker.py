"""The live speaker: tagged chunks queued, played from PortAudio's callback, stoppable at once.

The output stream runs for as long as the speaker is started (writing silence when idle), so
a reply starts without opening a stream. ``stop_now()`` (barge-in) drops the queue at once;
what the device already holds (~25 ms through PulseAudio at ``latency="low"``) still plays
out. Aborting the stream would drop that too, but ALSA's pulse plugin then underruns in a
loop after the restart, so it is not done. ``stop_now()`` reports how much of each tag was
heard: the controller keeps only that part of the reply in the history.

An idle stream costs ~1% of a core. ``idle_close_s > 0`` closes it after that long without
audio and the next ``play()`` reopens it (a few ms, in a worker thread). Measured on
PulseAudio: a stream reopened with ``latency="low"`` sometimes underruns for its first half
second, so pair ``idle_close_s`` with ``latency=0.05`` (stop_now's tail then grows to ~70 ms).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Hashable

import numpy as np

from daemon.audio import portaudio
from daemon.audio.live import LiveDevice, MessageCallback
from daemon.audio.playqueue import PlayQueue, QueuedOutput
from daemon.audio.portaudio import DeviceChoice
from daemon.config import AudioConfig
from daemon.errors import NoDeviceError

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
                 idle_close_s: float = 0.0, stall_s: float = 2.0) -> None:
        super().__init__(device if device is not None else cfg.output, "output",
                         cfg.reconnect_s, on_error, on_recovered, stall_s)
        self._on_first_audio = on_first_audio
        self._device_rate = device_rate
        self._block_ms = block_ms
        self._latency = latency
        self._idle_close_s = idle_close_s
        self._queue = PlayQueue(device_rate or 48000)
        self._ran_dry = asyncio.Event()
        self._dormant = False           # stream closed while idle; reopened by play()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reopening = False
        self.stream_rate = 0

    @property
    def connected(self) -> bool:
        """True while the device is usable (its stream open, or closed while idle)."""
        return self._stream is not None or self._dormant

    @property
    def dormant(self) -> bool:
        """True while the stream is closed for idleness (the next play() reopens it)."""
        return self._dormant

    def play(self, samples: np.ndarray, sample_rate: int, tag: Hashable = None) -> None:
        super().play(samples, sample_rate, tag)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._dormant and not self._reopening:
            self._reopening = True
            self._spawn(self._reopen(), "speaker-reopen")

    def stop_now(self) -> dict[Hashable, float]:
        report = super().stop_now()
        self._on_ran_dry(self._generation)
        return report

    # ------------------------------------------------------------ idle close / reopen
    def _on_ran_dry(self, generation: int) -> None:
        self._ran_dry.set()
        if generation != self._generation or self._idle_close_s <= 0 or self._loop is None:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self._loop.call_later(self._idle_close_s, self._go_dormant, generation)

    def _on_opened(self) -> None:
        self._on_ran_dry(self._generation)      # idle from the start: close if it stays so

    def _go_dormant(self, generation: int) -> None:
        """Close the stream after a quiet spell: an idle output stream still costs ~1% CPU."""
        self._idle_timer = None
        stream = self._stream
        if generation != self._generation or stream is None or self._reopening or self.is_playing:
            return
        self._stream, self._dormant = None, True
        _LOGGER.debug("speaker idle: stream closed until the next reply")
        self._spawn(asyncio.to_thread(portaudio.close_stream, stream), "speaker-idle-close")

    async def _reopen(self) -> None:
        generation = self._generation
        try:
            assert self._choice is not None
            stream = await self._open_safely(self._choice)
        except NoDeviceError as exc:
            self._reopening = False
            if generation == self._generation:
                self._dormant = False
                self._lost(generation, str(exc))
            return
        self._reopening = False
        if generation != self._generation or not self._dormant:
            await asyncio.to_thread(portaudio.close_stream, stream)
            return
        self._alive_at = time.monotonic()
        self._stream, self._dormant = stream, False

    def _open(self, choice: DeviceChoice) -> Any:
        """Open and start the output stream (worker thread)."""
        rate = self._device_rate or choice.default_rate
        if self._queue.rate != rate:
            self._queue = PlayQueue(rate)
        generation = self._generation
        stream = portaudio.open_stream(
            choice, samplerate=rate, channels=1, dtype="float32",
            blocksize=max(1, round(rate * self._block_ms / 1000)), latency=self._latency,
            callback=lambda out, n, t, status: self._callback(generation, out, t, status),
            finished_callback=lambda: self._finished(generation),
        )
        try:
            stream.start()
        except Exception:
            portaudio.close_stream(stream)
            raise
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
        _, started = queue.pull(out[:, 0], now + lag)
        if started is not None and self._on_first_audio is not None:
            self.post(self._first_audio, generation, started)
        if had and not queue.pending:
            self.post(self._on_ran_dry, generation)

    def _first_audio(self, generation: int, t: float) -> None:
        if generation == self._generation and self._on_first_audio is not None:
            self._on_first_audio(t)

    def _on_closed(self) -> None:
        self.stream_rate = 0
        self._dormant = False
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._queue.drop()
        self._ran_dry.set()
