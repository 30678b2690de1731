"""Where a turn's audio goes when no live speaker is involved: an audio file or a buffer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from daemon.messages import AudioChunk

if TYPE_CHECKING:
    from daemon.audio.filewrite import AudioFileWriter

DEFAULT_RATE = 22050


class BufferSink:
    """Collects a turn's audio in memory (tests, benchmarks)."""

    def __init__(self) -> None:
        self.chunks: list[AudioChunk] = []
        self.first_write: float | None = None

    def write(self, chunk: AudioChunk) -> None:
        if self.first_write is None:
            self.first_write = time.monotonic()
        self.chunks.append(chunk)

    @property
    def sample_rate(self) -> int:
        return self.chunks[0].sample_rate if self.chunks else DEFAULT_RATE

    def audio(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([c.samples for c in self.chunks]).astype(np.float32)


class AudioFileSink:
    """Streams a turn's audio into a file in the format the extension names (.wav: 16-bit
    PCM, .flac, .ogg, .mp3), so a reply of any length takes little memory.

    The audio goes to a temporary file beside ``path``: ``close()`` puts it in place of
    ``path`` (an existing file is replaced only then, whole), ``discard()`` deletes it and
    leaves ``path`` as it was (an error, Ctrl-C). The path is checked when the sink is made,
    so a bad one fails before any work (:class:`~daemon.errors.BadArgumentError`).
    """

    def __init__(self, path: str | Path) -> None:
        from daemon.audio.filewrite import check_output_file

        self.path = check_output_file(path)
        self.first_write: float | None = None
        self._out: AudioFileWriter | None = None
        self._rate = DEFAULT_RATE

    @property
    def sample_rate(self) -> int:
        """The file's rate: the first chunk's (later chunks are written as they come)."""
        return self._rate

    def write(self, chunk: AudioChunk) -> None:
        if self.first_write is None:
            self.first_write = time.monotonic()
            self._rate = chunk.sample_rate
        self._writer().write(chunk.samples)

    def close(self) -> Path:
        """Finish the file and put it in place (an empty one when nothing was written)."""
        out, self._out = self._writer(), None
        return out.commit()

    def discard(self) -> None:
        """Throw away what was written; the file at ``path`` is left as it was."""
        out, self._out = self._out, None
        if out is not None:
            out.discard()

    def _writer(self) -> AudioFileWriter:
        if self._out is None:
            from daemon.audio.filewrite import AudioFileWriter

            self._out = AudioFileWriter(self.path, self._rate)
        return self._out
