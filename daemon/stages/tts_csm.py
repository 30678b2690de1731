"""Speech with Sesame CSM-1B (transformers), streamed chunk by chunk at 24 kHz.

Voice consistency: ``tts.reference_audio`` + ``tts.reference_text`` are given to CSM as a
previous turn of the same speaker before every utterance, so each reply keeps that voice.
Their keys/values are computed once and reused (see :class:`CsmStreamer.prefill`).

Emotion: for an emotion NAME, a reference recorded in that mood is used when it exists
beside the main one (``reference.NAME.wav`` with its transcript in ``reference.NAME.txt``),
and the sampling temperature moves with the emotion and its intensity (calmer emotions
sample more conservatively, livelier ones more freely).

``tts.speed`` has no effect: CSM has no rate control (its pace follows the reference voice).

No watermark is added: transformers' CSM port has none, and Sesame's reference generator
adds one with the `silentcipher` package, which is not a dependency here (README, GPU profile).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from daemon.config import TtsConfig
from daemon.errors import ModelError
from daemon.messages import Emotion
from daemon.models import resolve_model
from daemon.stages.base import ShouldStop, never_stop
from daemon.stages.csm_stream import CsmStreamer, Segment, TextIds

_LOGGER = logging.getLogger(__name__)

SPEAKER = 0                      # the assistant's speaker id in CSM's "[0]text" turns
NEUTRAL_TEMPERATURE = 0.9        # Sesame's default sampling temperature
EMOTION_TEMPERATURE = {          # at full intensity
    "calm": 0.6, "serious": 0.65, "empathetic": 0.75, "neutral": NEUTRAL_TEMPERATURE,
    "cheerful": 1.0, "humorous": 1.05,
}
MAX_REFERENCE_S = 10.0           # longer references only lengthen the prompt
SECONDS_PER_CHAR = 0.12          # generous speaking-time bound: stops a run-away utterance
MAX_UTTERANCE_S = 60.0


def emotion_temperature(emotion: Emotion | None) -> float:
    """Sampling temperature: neutral's, moved toward the emotion's by its intensity."""
    if emotion is None:
        return NEUTRAL_TEMPERATURE
    target = EMOTION_TEMPERATURE.get(emotion.name, NEUTRAL_TEMPERATURE)
    weight = min(1.0, max(0.0, emotion.intensity) * 2.0)   # intensity 0.5 reaches the target
    return NEUTRAL_TEMPERATURE + (target - NEUTRAL_TEMPERATURE) * weight


def load_reference(path: Path, sample_rate: int) -> np.ndarray:
    """A reference recording as mono float32 at ``sample_rate``, at most MAX_REFERENCE_S long."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"TTS reference audio {path} cannot be read ({exc}); give a WAV or FLAC file") from None
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        div = gcd(rate, sample_rate)
        mono = resample_poly(mono, sample_rate // div, rate // div).astype(np.float32)
    return mono[: int(MAX_REFERENCE_S * sample_rate)]


def _emotion_reference(base: Path, name: str) -> tuple[Path, str] | None:
    audio = base.with_name(f"{base.stem}.{name}{base.suffix}")
    text = base.with_name(f"{base.stem}.{name}.txt")
    if audio.exists() and text.exists():
        return audio, text.read_text(encoding="utf-8").strip()
    return None


class CsmSynthesizer:
    """Implements :class:`daemon.stages.base.SpeechSynthesizer` with CSM-1B.

    ``CsmSynthesizer(cfg)`` loads ``cfg.voice`` (a local copy of sesame/csm-1b);
    tests pass ``model`` (a ``CsmForConditionalGeneration``) and ``text_ids`` instead, or
    use :meth:`from_csm_config`.
    """

    name = "csm"

    def __init__(self, cfg: TtsConfig, *, model: Any = None, text_ids: TextIds | None = None,
                 max_len: int | None = None) -> None:
        if model is None:
            model, text_ids = _load_pretrained(cfg)
        if text_ids is None:
            raise ModelError("TTS csm: a tokenizer is needed with a model passed in")
        self.cfg = cfg
        self._text_ids = text_ids
        self._streamer = CsmStreamer(model, max_len=max_len)
        self.sample_rate = self._streamer.sample_rate
        self._contexts: dict[str, tuple[Segment, ...]] = {}
        self._embeds: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.context_segments(None)          # read the reference now: a bad file fails at start-up
        if self._streamer.graphs:
            self.warm_up()                    # compile + capture (~30 s) at start-up, not on the first reply
        _LOGGER.info("CSM ready on %s (%s), CUDA graphs %s", self._streamer.device,
                     self._streamer.dtype, "on" if self._streamer.graphs else "off")

    @classmethod
    def from_csm_config(cls, csm_config: Any, cfg: TtsConfig, *, text_ids: TextIds, seed: int = 0,
                        device: str = "cpu", max_len: int | None = None) -> "CsmSynthesizer":
        """Random weights of a given ``CsmConfig`` shape (tests, benchmarks)."""
        import torch
        from transformers import CsmForConditionalGeneration

        torch.manual_seed(seed)
        dtype = torch.bfloat16 if device == "cuda" else torch.float32     # as _load_pretrained
        model = CsmForConditionalGeneration(csm_config).eval().to(device=device, dtype=dtype)
        return cls(cfg, model=model, text_ids=text_ids, max_len=max_len)

    @property
    def streamer(self) -> CsmStreamer:
        return self._streamer

    def warm_up(self) -> None:
        """Capture the CUDA graph and prefill the reference before the first reply."""
        for _ in self.synthesize("Hello.", should_stop=lambda: False):
            break

    # ----------------------------------------------------------- context
    def context_segments(self, emotion: Emotion | None) -> tuple[Segment, ...]:
        """The reference turn(s) placed before an utterance in this emotion."""
        key = self._context_key(emotion)
        if key not in self._contexts:
            self._contexts[key] = self._load_context(key)
        return self._contexts[key]

    def _context_key(self, emotion: Emotion | None) -> str:
        if emotion is None or not self.cfg.reference_audio:
            return "default"
        found = _emotion_reference(Path(self.cfg.reference_audio), emotion.name)
        return emotion.name if found else "default"

    def _load_context(self, key: str) -> tuple[Segment, ...]:
        if not self.cfg.reference_audio:
            return ()
        base = Path(self.cfg.reference_audio)
        if not base.exists():
            raise ModelError(f"TTS reference audio {base} does not exist; record a few seconds of the voice "
                             "there or clear tts.reference_audio")
        if key == "default":
            path, text = base, self.cfg.reference_text.strip()
            if not text:
                raise ModelError("TTS: tts.reference_text is empty; set it to what tts.reference_audio says")
        else:
            path, text = _emotion_reference(base, key) or (base, self.cfg.reference_text)
        codes = self._streamer.encode_audio(load_reference(path, self.sample_rate))
        _LOGGER.info("CSM reference %s (%s): %d frames", path.name, key, codes.shape[0])
        return (Segment(SPEAKER, text, codes.cpu()),)

    def _prefix(self, emotion: Emotion | None) -> tuple[str, Any]:
        key = self._context_key(emotion)
        segments = self.context_segments(emotion)
        if not segments:
            return key, None
        if key not in self._embeds:
            self._embeds[key] = self._streamer.embed(segments, self._text_ids)
        return key, self._embeds[key]

    # ----------------------------------------------------------- speech
    def max_frames(self, text: str) -> int:
        seconds = min(MAX_UTTERANCE_S, 2.0 + SECONDS_PER_CHAR * len(text))
        return int(seconds * self._streamer.sample_rate / self._streamer.samples_per_frame)

    def synthesize(self, text: str, *, emotion: Emotion | None = None,
                   should_stop: ShouldStop = never_stop) -> Iterator[np.ndarray]:
        """Yield float32 chunks: ``first_chunk_frames`` frames first, then ``chunk_frames``."""
        text = " ".join(text.split())
        if not text or should_stop():
            return
        with self._lock:
            key, prefix = self._prefix(emotion)
            embeds = self._streamer.embed([Segment(SPEAKER, text)], self._text_ids)
            self._streamer.prefill(embeds, prefix_key=key, prefix=prefix)
            chunks = self._streamer.stream(
                max_frames=self.max_frames(text), temperature=emotion_temperature(emotion),
                first_chunk_frames=self.cfg.first_chunk_frames, chunk_frames=self.cfg.chunk_frames,
                should_stop=should_stop,
            )
            for _codes, audio in chunks:
                yield np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _load_pretrained(cfg: TtsConfig) -> tuple[Any, TextIds]:
    path = resolve_model(cfg.voice, "CSM model (tts.voice)")
    if not (path.is_dir() and (path / "config.json").exists()):
        raise ModelError(f"TTS csm: {path} is not a CSM model folder (config.json missing); set tts.voice to "
                         "the folder `sottovoce models download --profile rtx4090` fills (models/csm-1b)")
    try:
        import torch
        from transformers import AutoTokenizer, CsmForConditionalGeneration
    except ImportError as exc:
        raise ModelError(f"TTS csm needs transformers with CSM support ({exc}); pip install 'transformers>=4.52'") from None
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ModelError("TTS csm: tts.device is cuda but PyTorch sees no CUDA GPU; check the driver "
                         "(`sottovoce doctor`) or set tts.device: cpu")
    dtype = torch.bfloat16 if cfg.device == "cuda" else torch.float32
    try:
        model = CsmForConditionalGeneration.from_pretrained(str(path), dtype=dtype).to(cfg.device).eval()
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"TTS csm: {path} failed to load ({exc})") from None
    return model, TextIds(lambda text: tok.encode(text, add_special_tokens=False),
                          int(tok.bos_token_id), int(tok.eos_token_id))
