"""Per-stage speed of the speech stages on this machine: VAD, STT, piper and espeak-ng.

Prints a markdown table (`python -m bench stages`). Numbers only, no pass/fail.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from bench.util import espeak_wav, machine, no_options, pct, table

ROOT = Path(__file__).resolve().parent.parent
CLIPS = {
    "jfk.flac (11 s, human)": None,
    "espeak question (en-us)": ("How many steps does the Skerrimore lighthouse have?", "en-us"),
    "espeak question (en-gb)": ("What does error E7 mean on the Zephyr kettle?", "en-gb"),
}
CLAUSE = "The lighthouse was built in eighteen eighty-seven,"      # a typical first clause
SENTENCE = "The lighthouse was built in eighteen eighty-seven, and its lamp still turns every night."
REPEATS = 5
# Sentences with the fact a listener must hear (issue 8: numbers, units, codes).
SPOKEN_FACTS = [
    ("Fill the kettle with 4.5 l of water.", "4.5"),
    ("Error E7 means the filter is blocked.", "E7"),
    ("The K-420 kettle draws 1500 W.", "K-420"),
    ("The lighthouse was built in 1887.", "1887"),
    ("Call 555-0134 for the bakery.", "555-0134"),
    ("Bake the loaves at 220 °C.", "220"),
    ("A large loaf costs $4.50.", "$4.50"),
    ("The tower has 132 steps.", "132"),
    ("One rotation of the lamp takes 7.5 s.", "7.5"),
    ("The bakery opens at 6:45 am.", "6:45"),
    ("Humidity should stay near 65%.", "65%"),
    ("Replace the ZK-3000 filter yearly.", "ZK-3000"),
    ("The keeper's log from 1903 survives.", "1903"),
    ("Use 0.75 kg of rye flour.", "0.75"),
]


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


def _words(text: str) -> list[str]:
    from daemon.stages.speech_text import to_speakable

    return re.findall(r"[a-z]+", to_speakable(text).lower().replace("-", " "))


def _heard_fact(heard: str, fact: str) -> bool:
    """The fact's words, in order, inside what was heard (both written out the same way)."""
    want, got = " ".join(_words(fact)), " ".join(_words(heard))
    return f" {want} " in f" {got} "


def _speakable_rows() -> list[list[object]]:
    """Piper speaks each sentence raw and through to_speakable; Whisper must hear the fact."""
    from daemon.audio.fileio import resample
    from daemon.config import SttConfig, TtsConfig, VadConfig
    from daemon.stages.speech_text import to_speakable
    from daemon.stages.stt import WhisperTranscriber
    from daemon.stages.tts_piper import PiperSynthesizer
    from daemon.stages.vad import load_silero

    piper = PiperSynthesizer(TtsConfig())
    stt = WhisperTranscriber(SttConfig(), vad=load_silero(VadConfig()))
    hits = {"raw text": 0, "to_speakable": 0}
    for sentence, fact in SPOKEN_FACTS:
        for label, text in (("raw text", sentence), ("to_speakable", to_speakable(sentence))):
            audio = np.concatenate(list(piper.synthesize(text)))
            heard, _ = stt.transcribe(resample(audio, piper.sample_rate, 16000))
            hits[label] += _heard_fact(heard, fact)
    n = len(SPOKEN_FACTS)
    return [[label, f"{count}/{n}", count / n] for label, count in hits.items()]


def main(argv: Sequence[str] | None = None) -> None:
    no_options("stages", __doc__, argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"Machine: {machine()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        clips = _load_clips(Path(tmp))
    rows = _vad_rows(clips) + _stt_rows(clips) + _tts_rows()
    print(table(["stage", "unit", "p50", "p95 / max"], rows))
    print("\nFacts heard back (piper -> Whisper tiny.en) from sentences with numbers, units, codes:\n")
    print(table(["text given to piper", "facts heard", "rate"], _speakable_rows()))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
