"""Per-stage speed of the speech stages on this machine: VAD, STT, piper and espeak-ng.

Prints a markdown table (`python -m bench stages`). Numbers only, no pass/fail.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bench.util import espeak_wav, machine, pct, table

ROOT = Path(__file__).resolve().parent.parent
CLIPS = {
    "jfk.flac (11 s, human)": None,
    "espeak question (en-us)": ("How many steps does the Skerrimore lighthouse have?", "en-us"),
    "espeak question (en-gb)": ("What does error E7 mean on the Zephyr kettle?", "en-gb"),
}
CLAUSE = "The lighthouse was built in eighteen eighty-seven,"      # a typical first clause
SENTENCE = "The lighthouse was built in eighteen eighty-seven, and its lamp still turns every night."
REPEATS = 5


def _first_and_total(synth: Callable[[], Iterator[np.ndarray]], rate: int) -> tuple[float, float, float]:
    """(first-audio latency s, total s, audio s) of one synthesis."""
    start = time.perf_counter()
    first = None
    samples = 0
    for chunk in synth():
        if first is None:
            first = time.perf_counter() - start
        samples += chunk.size
    return first or float("nan"), time.perf_counter() - start, samples / rate


def _load_clips(tmp: Path) -> dict[str, np.ndarray]:
    from daemon.audio.fileio import load_audio

    clips = {}
    for name, spec in CLIPS.items():
        if spec is None:
            clips[name] = load_audio(ROOT / "tests" / "data" / "jfk.flac")
        else:
            clips[name] = load_audio(espeak_wav(spec[0], tmp / f"{len(clips)}.wav", voice=spec[1]))
    return clips


def _vad_rows(clips: dict[str, np.ndarray]) -> list[list[object]]:
    from daemon.config import VadConfig
    from daemon.stages.vad import load_silero

    vad = load_silero(VadConfig())
    audio = np.concatenate(list(clips.values()))
    frames = audio.size // 512
    times = []
    for _ in range(REPEATS):
        vad.reset()
        start = time.perf_counter()
        for i in range(frames):
            vad.probability(audio[i * 512:(i + 1) * 512])
        times.append((time.perf_counter() - start) * 1000 / frames)
    return [["VAD (Silero ONNX, 1 thread)", "ms per 32 ms frame", pct(times, 50), pct(times, 95)]]


def _stt_rows(clips: dict[str, np.ndarray]) -> list[list[object]]:
    from daemon.config import SttConfig, VadConfig
    from daemon.stages.stt import WhisperTranscriber
    from daemon.stages.vad import load_silero

    start = time.perf_counter()
    stt = WhisperTranscriber(SttConfig(), vad=load_silero(VadConfig()))
    rows: list[list[object]] = [["STT load (tiny.en int8)", "s", time.perf_counter() - start, ""]]
    stt.transcribe(next(iter(clips.values())))            # warm-up
    for name, audio in clips.items():
        times = []
        for _ in range(3):
            t = time.perf_counter()
            stt.transcribe(audio)
            times.append(time.perf_counter() - t)
        rows.append([f"STT {name}", f"s per clip ({audio.size / 16000:.1f} s audio)", pct(times, 50), max(times)])
    return rows


def _tts_rows() -> list[list[object]]:
    from daemon.config import TtsConfig
    from daemon.stages.tts_espeak import EspeakSynthesizer
    from daemon.stages.tts_piper import PiperSynthesizer

    rows: list[list[object]] = []
    start = time.perf_counter()
    piper = PiperSynthesizer(TtsConfig())
    rows.append(["piper load (joe medium)", "s", time.perf_counter() - start, ""])
    for label, tts in (("piper", piper), ("espeak-ng", EspeakSynthesizer(TtsConfig()))):
        list(tts.synthesize("Warm up."))
        firsts = [_first_and_total(lambda: tts.synthesize(CLAUSE), tts.sample_rate)[0] for _ in range(REPEATS)]
        runs = [_first_and_total(lambda: tts.synthesize(SENTENCE), tts.sample_rate) for _ in range(REPEATS)]
        rtf = [r[1] / r[2] for r in runs]
        rows.append([f"{label} first audio", f"s ({len(CLAUSE)}-char first clause)", pct(firsts, 50), pct(firsts, 95)])
        rows.append([f"{label} real-time factor", "synth s / audio s", pct(rtf, 50), pct(rtf, 95)])
    return rows


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"Machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        clips = _load_clips(Path(tmp))
    rows = _vad_rows(clips) + _stt_rows(clips) + _tts_rows()
    print(table(["stage", "unit", "p50", "p95 / max"], rows))


if __name__ == "__main__":
    main()
