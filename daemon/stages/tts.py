"""Choosing the speech synthesizer: the configured engine, or espeak-ng when it fails to load."""

from __future__ import annotations

import logging

from daemon.config import TtsConfig
from daemon.errors import ModelError, SottovoceError
from daemon.stages.base import SpeechSynthesizer

_LOGGER = logging.getLogger(__name__)


def _build_engine(cfg: TtsConfig, engine: str) -> SpeechSynthesizer:
    if engine == "piper":
        from daemon.stages.tts_piper import PiperSynthesizer

        return PiperSynthesizer(cfg)
    if engine == "espeak":
        from daemon.stages.tts_espeak import EspeakSynthesizer

        return EspeakSynthesizer(cfg)
    if engine == "csm":
        from daemon.stages.tts_csm import CsmSynthesizer

        return CsmSynthesizer(cfg)
    raise ModelError(f"TTS: unknown engine {engine!r}; use piper, espeak or csm in tts.engine")


def build_tts(cfg: TtsConfig) -> SpeechSynthesizer:
    """The configured synthesizer; on a load failure, the fallback (logged as a warning).

    Raises :class:`ModelError` when the engine fails and ``cfg.fallback`` is "none" or the
    fallback fails too.
    """
    try:
        return _build_engine(cfg, cfg.engine)
    except Exception as exc:  # noqa: BLE001 - any load failure may fall back
        reason = str(exc) if isinstance(exc, SottovoceError) else f"{type(exc).__name__}: {exc}"
        if cfg.fallback == "none" or cfg.fallback == cfg.engine:
            if isinstance(exc, SottovoceError):
                raise
            raise ModelError(f"TTS engine {cfg.engine}: failed to load ({reason})") from None
        _LOGGER.warning("TTS engine %s failed to load (%s); falling back to %s", cfg.engine, reason, cfg.fallback)
        return _build_engine(cfg, cfg.fallback)
