"""Speech synthesis: piper streams sentences that Whisper understands, espeak-ng streams as
it speaks, emotions change the pace, and a broken main engine falls back to espeak-ng."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from bench.util import mib, proc_status
from daemon.config import Config
from daemon.errors import ModelError
from daemon.messages import Emotion
from daemon.stages.tts import build_tts
from daemon.stages.tts_espeak import EspeakSynthesizer
from daemon.stages.tts_piper import bounded_runs
from tests.fixtures_audio import to_16k

LONG = ("The lighthouse stands on a rock. Its lamp was lit every night. "
        "Keepers climbed the stairs at dusk. Today the light runs by itself.")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _heard(tts, transcriber, text: str, **kw) -> tuple[str, list[np.ndarray]]:
    chunks = list(tts.synthesize(text, **kw))
    audio = np.concatenate(chunks)
    heard, _ = transcriber.transcribe(to_16k(audio, tts.sample_rate))
    return heard, chunks


@pytest.mark.parametrize("engine", ["piper_tts", "espeak_tts"])
def test_spoken_words_are_heard_back(request, transcriber, engine: str) -> None:
    tts = request.getfixturevalue(engine)
    heard, chunks = _heard(tts, transcriber, "Please open the kitchen window.")
    assert {"open", "kitchen", "window"} <= _words(heard), heard
    for chunk in chunks:
        assert chunk.dtype == np.float32 and chunk.ndim == 1
        assert float(np.abs(chunk).max()) <= 1.0
    assert tts.sample_rate == 22050


@pytest.mark.parametrize("engine", ["piper_tts", "espeak_tts"])
def test_long_text_streams_in_several_chunks_and_stops_when_asked(request, engine: str) -> None:
    tts = request.getfixturevalue(engine)
    chunks = list(tts.synthesize(LONG))
    assert len(chunks) > 1
    total = sum(c.size for c in chunks) / tts.sample_rate
    assert total > 4.0
    taken: list[np.ndarray] = []
    for chunk in tts.synthesize(LONG, should_stop=lambda: len(taken) >= 1):
        taken.append(chunk)
    assert len(taken) == 1


@pytest.mark.parametrize("engine", ["piper_tts", "espeak_tts"])
def test_calm_is_slower_than_cheerful(request, engine: str) -> None:
    tts = request.getfixturevalue(engine)
    text = "The bakery opens at seven in the morning."

    def seconds(emotion: Emotion) -> float:
        """Median length of three renderings: piper samples its phoneme durations afresh."""
        lengths = sorted(sum(c.size for c in tts.synthesize(text, emotion=emotion)) / tts.sample_rate
                         for _ in range(3))
        return lengths[1]

    assert seconds(Emotion("calm", 1.0)) > seconds(Emotion("cheerful", 1.0)) * 1.04


def test_empty_text_yields_nothing(piper_tts, espeak_tts) -> None:
    assert list(piper_tts.synthesize("  ")) == [] and list(espeak_tts.synthesize("")) == []


def test_espeak_reads_text_that_looks_like_an_option(espeak_tts, transcriber) -> None:
    heard, _ = _heard(espeak_tts, transcriber, "--help me find the kitchen")
    assert "kitchen" in _words(heard), heard


def test_broken_main_engine_falls_back_to_espeak(default_config: Config, tmp_path: Path, caplog) -> None:
    cfg = dataclasses.replace(default_config.tts, engine="piper", voice=str(tmp_path / "missing.onnx"))
    with caplog.at_level(logging.WARNING, logger="daemon.stages.tts"):
        tts = build_tts(cfg)
    assert isinstance(tts, EspeakSynthesizer)
    assert any("falling back to espeak" in r.getMessage() for r in caplog.records)
    assert len(list(tts.synthesize("Still talking."))) >= 1


def test_no_fallback_gives_one_line_model_error(default_config: Config, tmp_path: Path) -> None:
    bad = tmp_path / "voice.onnx"
    bad.write_bytes(b"not a model")
    (tmp_path / "voice.onnx.json").write_text("{}")
    cfg = dataclasses.replace(default_config.tts, engine="piper", voice=str(bad), fallback="none")
    with pytest.raises(ModelError) as err:
        build_tts(cfg)
    assert "\n" not in str(err.value) and "voice.onnx" in str(err.value)


def test_espeak_missing_is_a_model_error(default_config: Config, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))        # a system without espeak-ng
    with pytest.raises(ModelError, match="espeak-ng"):
        EspeakSynthesizer(default_config.tts)


def test_piper_memory_levels_off_over_sentences_of_many_lengths(piper_tts) -> None:
    # With onnxruntime's default options piper's session keeps adding memory plans per input
    # shape: a second pass over the same 30 lengths grew the process by another 30-60 MiB
    # with the stock loader (one more over 30 longer ones: +280 MiB). The first pass may grow
    # it once (buffers for the longest sentence); after that it must stay put.
    words = LONG.replace(".", "").split()
    sentences = [" ".join((words * 3)[:n]) + "." for n in range(4, 34)]
    for text in sentences:
        assert list(piper_tts.synthesize(text))
    before = mib(proc_status()["RssAnon"])
    for text in sentences:
        assert list(piper_tts.synthesize(text))
    grown = mib(proc_status()["RssAnon"]) - before
    assert grown < 15, f"saying 30 sentences again grew the process by {grown:.0f} MiB"


def test_bounded_runs_cut_long_sentences_at_a_pause_or_a_word() -> None:
    words = list("ab cd, ef gh ij kl")
    assert list(bounded_runs(words, 100)) == [words]
    runs = list(bounded_runs(words, 10))
    assert ["".join(r) for r in runs] == ["ab cd,", "ef gh ij", "kl"]     # a pause, then a word boundary
    assert ["".join(r) for r in bounded_runs(list("x" * 25), 10)] == ["x" * 10, "x" * 10, "x" * 5]


def test_piper_says_a_sentence_without_an_end_in_bounded_passes(piper_tts) -> None:
    """Piper cuts only at sentence ends: 15,000 characters with no full stop went through VITS
    in one pass and took over 23 GB. Each pass now gets at most MAX_PHONEMES."""
    text = " ".join(["the keeper climbed the stairs to light the lamp"] * 40)   # ~1,900 characters
    chunks = list(piper_tts.synthesize(text))
    seconds = [c.size / piper_tts.sample_rate for c in chunks]
    assert len(chunks) >= 4 and max(seconds) < 40, seconds
    assert 60 < sum(seconds) < 250, seconds              # 360 words said, none lost
