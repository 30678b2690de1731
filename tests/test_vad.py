"""Silero VAD on onnxruntime, the whole-file speech finder, and the live endpointer,
on real (espeak-ng) speech."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from daemon.config import Config, VadConfig
from daemon.stages.vad import FRAME_SAMPLES, Endpointer, SileroVad, VadEvent, find_speech
from tests.fixtures_audio import speech_16k

SR = 16000


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


class FrameClock:
    """Time that advances one frame per VAD call: the stream's own clock, without waiting."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return next(self._ticks) * FRAME_SAMPLES / SR


def _run(endpointer: Endpointer, audio: np.ndarray, block: int = FRAME_SAMPLES) -> list[VadEvent]:
    events: list[VadEvent] = []
    for i in range(0, audio.size, block):
        events += endpointer.feed(audio[i:i + block])
    return events


def test_probabilities_separate_speech_from_silence(vad: SileroVad, spoken_question: np.ndarray) -> None:
    speech = vad.probabilities(spoken_question)
    quiet = vad.probabilities(_silence(1.0))
    assert speech.max() > 0.9 and np.mean(speech > 0.5) > 0.5
    assert quiet.max() < 0.1
    with pytest.raises(ValueError):
        vad.probability(np.zeros(400, np.float32))


def test_whole_file_probabilities_do_not_disturb_the_live_stream(vad: SileroVad, spoken_question: np.ndarray) -> None:
    frames = [spoken_question[i:i + FRAME_SAMPLES] for i in range(0, 40 * FRAME_SAMPLES, FRAME_SAMPLES)]
    vad.reset()
    straight = [vad.probability(f) for f in frames]
    vad.reset()
    interrupted = [vad.probability(f) for f in frames[:20]]
    vad.probabilities(np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.3)
    interrupted += [vad.probability(f) for f in frames[20:]]
    vad.reset()
    assert np.allclose(straight, interrupted)


def test_find_speech_locates_the_spoken_part(vad: SileroVad, spoken_question: np.ndarray) -> None:
    clip = np.concatenate([_silence(1.0), spoken_question, _silence(1.5)])
    own = vad.probabilities(spoken_question)
    voiced = np.flatnonzero(own >= 0.5)
    span = find_speech(vad, clip)
    assert span is not None
    start, end = span
    assert abs(start - (1.0 + voiced[0] * 0.032)) < 0.1
    assert abs(end - (1.0 + (voiced[-1] + 1) * 0.032)) < 0.1
    assert vad.find_speech(clip) == span


@pytest.mark.parametrize("kind", ["silence", "white_noise", "hum"])
def test_find_speech_finds_none_in_non_speech(vad: SileroVad, kind: str) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(3 * SR) / SR
    clip = {
        "silence": _silence(3.0),
        "white_noise": (rng.standard_normal(3 * SR) * 0.2).astype(np.float32),
        "hum": (0.2 * np.sin(2 * np.pi * 60 * t)).astype(np.float32),
    }[kind]
    assert find_speech(vad, clip) is None


@pytest.mark.parametrize("block", [FRAME_SAMPLES, 160, 1000])
def test_endpointer_cuts_one_utterance_with_preroll(
    vad: SileroVad, default_config: Config, spoken_question: np.ndarray, block: int
) -> None:
    cfg = default_config.vad
    lead = 1.0
    stream = np.concatenate([_silence(lead), spoken_question, _silence(1.0)])
    ep = Endpointer(vad, cfg, clock=FrameClock())
    events = _run(ep, stream, block)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1
    assert kinds.count("start") == 1 and not ep.in_speech
    end = events[-1]
    assert end.audio is not None
    onset = find_speech(vad, spoken_question)
    assert onset is not None
    speech_s = onset[1] - onset[0]
    # Pre-roll: at least preroll_ms of audio before the first voiced frame is kept.
    first_voiced = find_speech(vad, end.audio)
    assert first_voiced is not None and first_voiced[0] >= cfg.preroll_ms / 1000 - 0.032
    assert end.audio.size / SR >= speech_s + cfg.preroll_ms / 1000
    assert abs(end.speech_ms / 1000 - speech_s) < 0.35
    # ended_at is the clock time of the last voiced frame, not of the end-of-silence decision.
    assert abs(end.ended_at - (lead + onset[1])) < 0.1
    assert end.at - end.ended_at >= cfg.end_silence_ms / 1000 - 0.064


def test_preroll_keeps_the_first_word(vad: SileroVad, transcriber, default_config: Config) -> None:
    question = speech_16k("Tell me about the lighthouse keeper.")
    ep = Endpointer(vad, default_config.vad)
    events = _run(ep, np.concatenate([_silence(0.8), question, _silence(0.8)]))
    ends = [e for e in events if e.kind == "end"]
    assert len(ends) == 1
    text, _ = transcriber.transcribe(ends[0].audio)
    assert text.lower().split()[0].strip(",.") == "tell"


def test_a_short_pause_resumes_and_a_long_one_ends(vad: SileroVad, default_config: Config) -> None:
    a = speech_16k("The kettle is ready.")
    b = speech_16k("Pour the water now.")
    # espeak leaves ~0.3 s of silence around each sentence: the short gap is ~0.7 s in all.
    cfg = dataclasses.replace(default_config.vad, end_silence_ms=1000)
    ep = Endpointer(vad, cfg, pause_ms=128)
    short = _run(ep, np.concatenate([_silence(0.5), a, _silence(0.35), b, _silence(1.5)]))
    assert [e.kind for e in short].count("end") == 1
    assert "pause" in [e.kind for e in short] and "resume" in [e.kind for e in short]
    long = _run(ep, np.concatenate([_silence(0.5), a, _silence(1.5), b, _silence(1.5)]))
    assert [e.kind for e in long].count("end") == 2
    assert [e.kind for e in long].count("start") == 2


def test_bursts_shorter_than_min_speech_are_dropped(vad: SileroVad, default_config: Config,
                                                   spoken_question: np.ndarray) -> None:
    probs = vad.probabilities(spoken_question)
    first = int(np.flatnonzero(probs > 0.9)[0])
    burst = spoken_question[first * FRAME_SAMPLES:(first + 4) * FRAME_SAMPLES]      # 128 ms of speech
    cfg = dataclasses.replace(default_config.vad, min_speech_ms=250)
    ep = Endpointer(vad, cfg)
    assert _run(ep, np.concatenate([_silence(0.5), burst, _silence(1.0)])) == []
    loose = Endpointer(vad, dataclasses.replace(cfg, min_speech_ms=64))
    assert [e.kind for e in _run(loose, np.concatenate([_silence(0.5), burst, _silence(1.0)]))] == ["start", "pause", "end"]


def test_stricter_threshold_while_the_assistant_speaks(vad: SileroVad, spoken_question: np.ndarray) -> None:
    """Faint speech under noise (probabilities between the two thresholds) only counts while
    the assistant is quiet."""
    rng = np.random.default_rng(0)
    faint = spoken_question * 0.1 + rng.standard_normal(spoken_question.size).astype(np.float32) * 0.02
    probs = vad.probabilities(faint)
    cfg = VadConfig(threshold=0.4, speaking_threshold=0.95, min_speech_ms=250, end_silence_ms=400)
    assert probs.max() < cfg.speaking_threshold and (probs >= cfg.threshold).sum() * 32 >= 300, probs
    stream = np.concatenate([_silence(0.5), faint, _silence(1.0)])
    ep = Endpointer(vad, cfg)
    ep.set_assistant_speaking(True)
    assert ep.threshold == cfg.speaking_threshold
    assert _run(ep, stream) == []
    ep.set_assistant_speaking(False)
    assert ep.threshold == cfg.threshold
    assert [e.kind for e in _run(ep, stream)][-1] == "end"
