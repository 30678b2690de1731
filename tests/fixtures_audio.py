"""Speech-stage fixtures: the real VAD, Whisper and TTS models, each loaded once per run,
and spoken test audio made with espeak-ng."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from bench.util import espeak_wav
from daemon.config import Config
from daemon.stages.base import SpeechSynthesizer
from daemon.stages.stt import WhisperTranscriber
from daemon.stages.vad import SileroVad, load_silero


def speech_16k(text: str, voice: str = "en-us") -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz float32 mono samples."""
    from daemon.audio.fileio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        return load_audio(espeak_wav(text, Path(tmp) / "s.wav", voice=voice))


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    from daemon.audio.fileio import resample

    return resample(np.asarray(samples, dtype=np.float32), rate, 16000)


@pytest.fixture(scope="session")
def vad(default_config: Config) -> SileroVad:
    return load_silero(default_config.vad)


@pytest.fixture(scope="session")
def transcriber(default_config: Config, vad: SileroVad) -> WhisperTranscriber:
    return WhisperTranscriber(default_config.stt, vad=vad)


@pytest.fixture(scope="session")
def piper_tts(default_config: Config) -> SpeechSynthesizer:
    from daemon.stages.tts_piper import PiperSynthesizer

    return PiperSynthesizer(default_config.tts)


@pytest.fixture(scope="session")
def espeak_tts(default_config: Config) -> SpeechSynthesizer:
    from daemon.stages.tts_espeak import EspeakSynthesizer

    return EspeakSynthesizer(default_config.tts)


@pytest.fixture(scope="session")
def spoken_question() -> Iterator[np.ndarray]:
    """A spoken question (16 kHz float32) shared by the VAD and STT tests."""
    yield speech_16k("How long should the dough rest before baking?")
