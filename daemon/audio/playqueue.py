"""The queue behind a speaker: tagged chunks in, fixed blocks out, and what was really heard.

Shared by the live :class:`~daemon.audio.speaker.Speaker` (drained from PortAudio's thread)
and the :class:`~daemon.audio.filedev.FileSpeaker` (drained by a paced task). Every chunk
carries a tag (the controller uses ``(turn, clause)``); :meth:`PlayQueue.report` says which
share of each tag's audio has reached the loudspeaker by a given instant, from the time at
which each block was due at the DAC.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Hashable

import numpy as np

from daemon.audio.resampler import StreamResampler

_LOGGER = logging.getLogger(__name__)
_HISTORY = 4096                 # items remembered for reports (older ones are forgotten)


@dataclass
class _Item:
    tag: Hashable
    data: np.ndarray            # at the output rate
    pos: int = 0                # samples handed to the device
    due_end: float = 0.0        # monotonic time the last handed sample reaches the DAC
    dropped: bool = False


class PlayQueue:
    """Thread-safe FIFO of chunks, resampled to ``rate`` on the way in."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._queue: collections.deque[_Item] = collections.deque()
        self._log: collections.deque[_Item] = collections.deque(maxlen=_HISTORY)
        self._resampler: StreamResampler | None = None
        self._idle = True           # nothing handed out since the queue last ran dry
        self._last_due = 0.0        # when the last handed-out sample reaches the DAC
        self._held = False          # silent for now, queue kept (speech that may be a barge-in)

    def push(self, samples: np.ndarray, sample_rate: int, tag: Hashable) -> int:
        """Queue a chunk; returns its length at the output rate."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._lock:
            if self._resampler is None or self._resampler.src_rate != sample_rate:
                # One converter per run of same-rate chunks keeps their joins click-free.
                self._resampler = StreamResampler(sample_rate, self.rate)
            data = self._resampler.process(x)
            item = _Item(tag, data)
            self._queue.append(item)
            self._log.append(item)
            return data.size

    def pull(self, out: np.ndarray, due: float) -> tuple[int, float | None]:
        """Fill ``out`` (zeros where the queue runs dry); ``due`` is when out[0] plays.

        Returns how many samples came from the queue, and the due time of the first sample
        when this block starts audio after silence (for ``on_first_audio``), else None.
        """
        n = out.size
        filled = 0
        started: float | None = None
        with self._lock:
            while filled < n and self._queue and not self._held:
                item = self._queue[0]
                take = min(n - filled, item.data.size - item.pos)
                out[filled:filled + take] = item.data[item.pos:item.pos + take]
                if self._idle and take:
                    started = due + filled / self.rate
                    self._idle = False
                item.pos += take
                filled += take
                item.due_end = due + filled / self.rate
                if item.pos >= item.data.size:
                    self._queue.popleft()
            if filled:
                self._last_due = due + filled / self.rate
            if not self._queue:
                self._idle = True
        out[filled:] = 0.0
        return filled, started

    def drop(self) -> None:
        """Forget everything queued (barge-in); the resampler starts afresh."""
        with self._lock:
            for item in self._queue:
                item.dropped = True
            self._queue.clear()
            self._resampler = None
            self._idle = True
            self._held = False
            self._last_due = 0.0        # what the device still holds is not waited for

    def hold(self, on: bool) -> None:
        """Hand out silence, keeping the queue, until called with False."""
        with self._lock:
            self._held = on

    @property
    def held(self) -> bool:
        return self._held

    @property
    def pending(self) -> bool:
        """True while chunks wait to be handed to the device."""
        with self._lock:
            return bool(self._queue)

    def busy_until(self) -> float:
        """When the last handed-out sample plays (monotonic), while nothing is queued."""
        with self._lock:
            return self._last_due

    def report(self, now: float) -> dict[Hashable, float]:
        """Share (0-1) of each remembered tag's audio heard by ``now``."""
        played: dict[Hashable, int] = {}
        total: dict[Hashable, int] = {}
        with self._lock:
            for item in self._log:
                heard = item.pos - max(0.0, item.due_end - now) * self.rate
                played[item.tag] = played.get(item.tag, 0) + int(max(0.0, heard))
                total[item.tag] = total.get(item.tag, 0) + item.data.size
        return {tag: (min(1.0, played[tag] / total[tag]) if total[tag] else 1.0) for tag in total}

    def forget(self) -> None:
        """Clear the report history (a new turn begins)."""
        with self._lock:
            self._log.clear()



class QueuedOutput:
    """The speaker API on top of a :class:`PlayQueue` (live device or file).

    Subclasses set ``self._queue`` and ``self._ran_dry`` (set when the queue empties) and
    provide ``connected``.
    """

    _queue: PlayQueue
    _ran_dry: asyncio.Event

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def play(self, samples: np.ndarray, sample_rate: int, tag: Hashable = None) -> None:
        """Queue a chunk (float32 mono in [-1, 1], any rate) after what is already queued."""
        self._queue.push(samples, sample_rate, tag)
        if not self.connected:
            _LOGGER.debug("no output device: chunk %r dropped", tag)
            self._queue.drop()      # remembered as not heard
            return
        self._ran_dry.clear()

    @property
    def is_playing(self) -> bool:
        """True while audio is queued or still on its way out of the loudspeaker."""
        return self._queue.pending or self._queue.busy_until() > time.monotonic()

    async def wait_done(self) -> None:
        """Return once everything queued has been heard (or dropped)."""
        while self.connected and self._queue.pending:
            self._ran_dry.clear()
            try:
                await asyncio.wait_for(self._ran_dry.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        remaining = self._queue.busy_until() - time.monotonic()
        if remaining > 0 and self.connected:
            await asyncio.sleep(remaining)

    def hold(self, on: bool) -> None:
        """Fall silent at once without losing what is queued (the user may be starting to
        talk over the reply), or go on from where it stopped."""
        self._queue.hold(on)

    def describe(self) -> str:
        """One line on the queue's state, for diagnostics."""
        return (f"connected {self.connected}, queued {self._queue.pending}, held {self._queue.held}, "
                f"busy for {max(0.0, self._queue.busy_until() - time.monotonic()):.2f} s")

    def stop_now(self) -> dict[Hashable, float]:
        """Barge-in: drop everything queued at once; share (0-1) of each tag that was heard.

        The report covers the chunks queued since the previous ``stop_now()`` or
        :meth:`forget`, and then starts afresh.
        """
        self._queue.drop()
        report = self._queue.report(time.monotonic())
        self._queue.forget()
        self._ran_dry.set()
        return report

    def played_tags(self) -> dict[Hashable, float]:
        """Share (0-1) of each tag heard so far (chunks since the last stop_now/forget)."""
        return self._queue.report(time.monotonic())

    def forget(self) -> None:
        """Start a new report (e.g. at the start of a turn)."""
        self._queue.forget()
