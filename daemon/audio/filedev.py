"""Stand-ins for the devices: a WAV read in real time, no microphone, a WAV written in real time.

``sottovoced --input FILE.wav`` / ``--input none`` / ``--output FILE.wav`` use these for
headless runs and tests. Both file devices keep wall-clock pace, so endpointing and barge-in
behave as they would with a sound card.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from daemon.audio.fileio import load_audio
from daemon.audio.filewrite import check_output_file
from daemon.audio.mic import FRAME_SAMPLES, FrameCallback
from daemon.audio.playqueue import PlayQueue, QueuedOutput

_LOGGER = logging.getLogger(__name__)


class FileMicrophone:
    """Frames of an audio file at wall-clock pace, then silence forever (or the end).

    ``on_frame(frame, t)`` runs on the event loop, ``t`` being the ``time.monotonic()`` at
    which the frame "was captured". With ``after="end"`` the frames stop at the end of the
    file and ``on_end()`` is called. :meth:`start` raises
    :class:`~daemon.errors.BadAudioError` when the file is missing or not audio.
    """

    connected = True
    error = ""

    def __init__(self, path: str | os.PathLike[str], on_frame: FrameCallback, *,
                 sample_rate: int = 16000, frame_samples: int = FRAME_SAMPLES,
                 after: Literal["silence", "end"] = "silence",
                 on_end: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        self._on_frame = on_frame
        self._after = after
        self._on_end = on_end
        self._task: asyncio.Task[None] | None = None
        self.frames_delivered = 0

    @property
    def device_label(self) -> str:
        return str(self.path)

    async def start(self) -> None:
        """Decode the file, then deliver it in the background."""
        audio = await asyncio.to_thread(load_audio, self.path, self.sample_rate)
        self._task = asyncio.create_task(self._run(audio), name="file-microphone")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, audio: np.ndarray) -> None:
        size = self.frame_samples
        step = size / self.sample_rate
        silence = np.zeros(size, dtype=np.float32)
        t0 = time.monotonic()
        i = 0
        while True:
            start = i * size
            if start < audio.size:
                frame = np.zeros(size, dtype=np.float32)
                chunk = audio[start:start + size]
                frame[:chunk.size] = chunk
            elif self._after == "end":
                _LOGGER.info("input file %s finished", self.path)
                if self._on_end is not None:
                    self._on_end()
                return
            else:
                frame = silence.copy()
            due = t0 + i * step
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.frames_delivered += 1
            try:
                self._on_frame(frame, due)
            except Exception:  # noqa: BLE001 - the owner's bug must not stop the input
                _LOGGER.exception("on_frame failed")
            i += 1


class NullMicrophone:
    """``--input none``: a microphone that never hears anything."""

    connected = True
    error = ""
    device_label = "none"

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.frames_delivered = 0

    async def start(self) -> None:
        _LOGGER.info("running without a microphone (--input none)")

    async def stop(self) -> None:
        return None


class FileSpeaker(QueuedOutput):
    """``--output FILE.wav``: what would have been played, written at wall-clock pace.

    The same API as :class:`~daemon.audio.speaker.Speaker`. A virtual device drains the queue
    in ``block_ms`` steps in real time, so ``stop_now()`` cuts the audio where a loudspeaker
    would have been cut; only audio is written (idle time between replies is left out).
    The file is a 16-bit WAV at ``sample_rate``, its header brought up to date after every
    block, so it can be read while the service runs. A path that is a folder, not named .wav or
    not writable is refused when the speaker is made (:class:`~daemon.errors.BadArgumentError`).
    """

    error = ""

    def __init__(self, path: str | os.PathLike[str],
                 on_first_audio: Callable[[float], None] | None = None, *,
                 sample_rate: int = 22050, block_ms: float = 20.0) -> None:
        self.path = check_output_file(path, suffixes=(".wav",), in_place=True)
        self.sample_rate = sample_rate
        self._block = max(1, round(sample_rate * block_ms / 1000))
        self._on_first_audio = on_first_audio
        self._queue = PlayQueue(sample_rate)
        self._ran_dry = asyncio.Event()
        self._wake = asyncio.Event()
        self._file: Any = None
        self._task: asyncio.Task[None] | None = None
        self.samples_written = 0

    @property
    def connected(self) -> bool:
        return self._file is not None

    @property
    def device_label(self) -> str:
        return str(self.path)

    async def start(self) -> None:
        import soundfile

        self._file = soundfile.SoundFile(str(self.path), "w", samplerate=self.sample_rate,
                                         channels=1, subtype="PCM_16", format="WAV")
        self._task = asyncio.create_task(self._run(), name="file-speaker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        file, self._file = self._file, None
        if file is not None:
            file.close()
        self._queue.drop()
        self._ran_dry.set()

    def play(self, samples: np.ndarray, sample_rate: int, tag: Any = None) -> None:
        super().play(samples, sample_rate, tag)
        self._wake.set()

    async def _run(self) -> None:
        step = self._block / self.sample_rate
        out = np.zeros(self._block, dtype=np.float32)
        while True:
            self._wake.clear()
            if not self._queue.pending:
                await self._wake.wait()
            t0 = time.monotonic()
            i = 0
            while self._queue.pending:
                due = t0 + i * step
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                filled, started = self._queue.pull(out, due)
                if filled:
                    self._file.write(out[:filled])
                    self._file.flush()
                    self.samples_written += filled
                if started is not None and self._on_first_audio is not None:
                    self._on_first_audio(started)
                i += 1
            self._ran_dry.set()
