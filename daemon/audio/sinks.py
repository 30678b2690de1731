"""Where a turn's audio goes when no live speaker is involved: an audio file or a buffer."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from daemon.messages import AudioChunk


class BufferSink:
    """Collects a turn's audio in memory (tests, WAV output, benchmarks)."""

    def __init__(self) -> None:
        self.chunks: list[AudioChunk] = []
        self.first_write: float | None = None

    def write(self, chunk: AudioChunk) -> None:
        if self.first_write is None:
            self.first_write = time.monotonic()
        self.chunks.append(chunk)

    @property
    def sample_rate(self) -> int:
        return self.chunks[0].sample_rate if self.chunks else 22050

    def audio(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([c.samples for c in self.chunks]).astype(np.float32)


class AudioFileSink(BufferSink):
    """Collects audio and writes it on ``close()`` in the format the extension names
    (.wav: 16-bit PCM, .flac, .ogg, .mp3). The path is checked when the sink is made, so a
    bad one fails before any work (:class:`~daemon.errors.BadArgumentError`)."""

    def __init__(self, path: str | Path) -> None:
        from daemon.audio.fileio import check_output_file

        super().__init__()
        self.path = check_output_file(path)

    def close(self) -> Path:
        from daemon.audio.fileio import write_audio

        write_audio(self.path, self.audio(), self.sample_rate)
        return self.path
