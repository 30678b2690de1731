"""espeak-ng TTS: the fallback voice. Robotic, but needs no model and starts at once."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from typing import BinaryIO, Generator, Iterator

import numpy as np

from daemon.config import TtsConfig
from daemon.errors import ModelError
from daemon.messages import Emotion
from daemon.stages.base import ShouldStop, never_stop

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 22050                 # what espeak-ng --stdout writes
_BASE_WPM = 170
_BASE_PITCH = 50
_CHUNK_BYTES = 2 * SAMPLE_RATE // 5  # 0.2 s of 16-bit audio per yielded chunk
# (pitch change, speed change) per emotion at full intensity.
_STYLE = {
    "cheerful": (12, 0.10), "humorous": (8, 0.05), "calm": (-6, -0.12),
    "empathetic": (-4, -0.08), "serious": (-8, -0.04),
}


class EspeakSynthesizer:
    """Runs ``espeak-ng --stdout`` and streams its WAV output as it is produced."""

    name = "espeak"
    sample_rate = SAMPLE_RATE

    def __init__(self, cfg: TtsConfig) -> None:
        program = shutil.which("espeak-ng")
        if program is None:
            raise ModelError("espeak-ng: program not found; install it with `apt-get install espeak-ng`")
        self._program = program
        self._cfg = cfg

    def _command(self, emotion: Emotion | None) -> list[str]:
        pitch_delta, speed_delta = 0, 0.0
        if emotion is not None and emotion.name in _STYLE:
            intensity = min(max(emotion.intensity, 0.0), 1.0)
            pitch_delta = round(_STYLE[emotion.name][0] * intensity)
            speed_delta = _STYLE[emotion.name][1] * intensity
        wpm = round(_BASE_WPM * self._cfg.speed * (1.0 + speed_delta))
        pitch = min(max(_BASE_PITCH + pitch_delta, 0), 99)
        return [self._program, "--stdout", "-v", self._cfg.espeak_voice, "-s", str(wpm), "-p", str(pitch)]

    def synthesize(
        self, text: str, *, emotion: Emotion | None = None, should_stop: ShouldStop = never_stop
    ) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks of ~0.2 s at 22050 Hz while espeak-ng is still talking."""
        if not text.strip():
            return
        # Text goes through stdin: a reply starting with "-" must not be read as an option.
        proc = subprocess.Popen(
            self._command(emotion), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            # Written from a thread: espeak-ng may fill its output pipe before reading all input.
            writer = threading.Thread(target=_feed, args=(proc, text), name="espeak-stdin", daemon=True)
            writer.start()
            if (yield from self._stream(proc, should_stop)):
                self._check(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def _stream(
        self, proc: subprocess.Popen[bytes], should_stop: ShouldStop
    ) -> Generator[np.ndarray, None, bool]:
        """Yield the samples as they arrive; True when espeak-ng finished (not stopped)."""
        assert proc.stdout is not None
        if not _skip_header(proc.stdout):
            return True
        leftover = b""
        while True:
            if should_stop():
                return False
            data = proc.stdout.read1(_CHUNK_BYTES)   # whatever has arrived, without waiting for more
            if not data:
                return True
            data = leftover + data
            usable = len(data) - len(data) % 2
            leftover = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0

    def _check(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        if code != 0:
            err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
            raise ModelError(f"espeak-ng failed (exit {code}): {err.splitlines()[0] if err else 'no message'}")


def _feed(proc: subprocess.Popen[bytes], text: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(text.encode("utf-8"))
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass                                     # stopped early: espeak-ng is gone


def _skip_header(stream: BinaryIO) -> bool:
    """Consume the RIFF header up to the ``data`` samples; False when the stream is empty.

    espeak-ng writes a streaming header whose sizes are placeholders: only formats are read.
    """
    read = stream.read
    head = read(12)
    if len(head) < 12:
        return False
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise ModelError("espeak-ng: unexpected output (not a WAV stream)")
    while True:
        chunk = read(8)
        if len(chunk) < 8:
            return False
        size = int.from_bytes(chunk[4:8], "little")
        if chunk[:4] == b"data":
            return True
        if chunk[:4] == b"fmt ":
            fmt = read(size)
            rate = int.from_bytes(fmt[4:8], "little")
            if rate != SAMPLE_RATE or fmt[14:16] != b"\x10\x00":
                raise ModelError(f"espeak-ng: unexpected WAV format ({rate} Hz)")
        else:
            read(size)
