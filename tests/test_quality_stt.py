"""Knowledge-base-aware speech recognition: a two-pass decode biased by the few terms the
first transcript seems to be about, on real Whisper tiny.en and real (espeak) speech."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from daemon.audio.fileio import load_audio
from daemon.stages.stt import WhisperTranscriber, plausible_correction, same_sound_span
from daemon.stages.stt_nbest import prefer_question, reads_as_question
from daemon.stages.vad import speech_clip
from tests.fixtures_audio import speech_16k
from tests.fixtures_core import DATA


@pytest.fixture(autouse=True)
def _seeded_sampling() -> None:
    """Whisper's sampling fallback draws from CTranslate2's generator, which runs on from test
    to test: seeded here, a first pass that resamples is heard the same whatever ran before
    (unseeded, one suite run heard "when it can be more like house first" and the biased
    pass, rightly, did not replace a transcript that short)."""
    import ctranslate2

    ctranslate2.set_random_seed(1000)


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]+", " ", text.lower())).strip()


def test_a_misheard_name_is_recognized_on_the_second_pass(transcriber: Any, quality_kb: Any) -> None:
    question = speech_16k("How many steps does Skerrimore lighthouse have?", voice="en-gb")
    plain, _ = transcriber.transcribe(question)
    assert "skerrimore" not in _plain(plain), "precondition: unbiased tiny.en mishears the name"
    hints_seen: list[str] = []

    def hints(first: str) -> str:
        hints_seen.append(quality_kb.speech_hints(first))
        return hints_seen[-1]

    biased, _ = transcriber.transcribe(question, hints=hints)
    assert "skerrimore" in _plain(biased) and "steps" in _plain(biased), (plain, biased, hints_seen)
    # Few terms, not the whole vocabulary: each extra one is a chance to write what was not said.
    assert 1 <= len(hints_seen[0].split(", ")) <= 5, hints_seen


def test_the_biased_pass_searches_a_wider_beam(transcriber: Any, quality_kb: Any) -> None:
    """The second pass decodes with ``stt.biased_beam_size`` (5) beams: greedy decoding with the
    same hotwords writes "Kettle, remote" for the name; the beam finds it, the same every time.
    (The greedy side here does not resample: its fallback draws differ from run to run.)"""
    cfg = transcriber._cfg
    assert cfg.biased_beam_size == 5 and cfg.beam_size == 1
    greedy = WhisperTranscriber(dataclasses.replace(cfg, biased_beam_size=1, sampling_fallback=False),
                                vad=transcriber._vad)
    question = speech_16k("When was Skerrimore Lighthouse first lit?", voice="en-us")
    heard = set()
    for _ in range(2):
        biased, _ = transcriber.transcribe(question, hints=quality_kb.speech_hints)
        assert "skerrimore lighthouse first lit" in _plain(biased), biased
        narrow, _ = greedy.transcribe(question, hints=quality_kb.speech_hints)
        assert "skerrimore" not in _plain(narrow), narrow
        heard.add((biased, narrow))
    assert len(heard) == 1, heard


def test_general_speech_is_unchanged_by_the_bias(transcriber: Any, quality_kb: Any) -> None:
    jfk = load_audio(DATA / "jfk.flac")
    plain, _ = transcriber.transcribe(jfk)
    biased, _ = transcriber.transcribe(jfk, hints=quality_kb.speech_hints)
    assert _plain(biased) == _plain(plain)
    assert "ask not what your country can do for you" in _plain(biased)


def test_hints_follow_what_was_heard(quality_kb: Any) -> None:
    lighthouse = quality_kb.speech_hints("How many steps does it carry more light house have?").split(", ")
    assert "Skerrimore Lighthouse" in lighthouse and len(lighthouse) <= 5, lighthouse
    bakery = quality_kb.speech_hints("When is the sourdough starter go true then?").split(", ")
    assert "Gertrude" in bakery and "Quillfeather Bakery" in bakery, bakery
    assert quality_kb.speech_hints("   ") == ""


def test_a_biased_pass_that_adds_or_drops_speech_is_rejected() -> None:
    first = "And so my fellow Americans ask not what your country can do for you"
    assert same_sound_span(first, first.replace("Americans", "Americans,"))
    assert not same_sound_span(first, first + " Skerrimore Lighthouse, Zephyr K-420 Kettle")
    assert not same_sound_span("How many steps does it carry more light house have", "How many")
    assert same_sound_span("How many steps does it carry more light house have",
                           "How many steps does Skerrimore Lighthouse have")


def test_a_biased_pass_that_writes_a_different_sentence_is_rejected() -> None:
    # Seen live: a biased pass over a barged-in question looped on the hotwords.
    first = "When was Skerrimore lighthouse first lit"
    assert not plausible_correction(first, "When Zephyr Kettle, Zephyr Kettle, Zephyr Kettle")
    assert not plausible_correction("When was it?", "When Zephyr Kettle, Zephyr Kettle")
    assert not plausible_correction("the kettle the kettle", "the kettle the kettle the kettle")
    # Names corrected in an otherwise equal sentence are kept.
    assert plausible_correction("How many steps does it carry more light house have",
                                "How many steps does Skerrimore Lighthouse have")
    assert plausible_correction("How do I descale the never kettle", "How do I descale the Zephyr kettle")


def test_a_near_tie_in_the_beam_is_read_as_a_question(transcriber: Any, quality_kb: Any, vad: Any,
                                                      tmp_path: Path) -> None:
    """The benchmark's noisy head-baker question: the beam's best reading, "It's not that may
    correct Quillfeather Bakery", beats "Who is not ..." by 0.003 per token; with
    ``stt.question_margin`` the question is kept, so a name is looked for, as was asked."""
    import ctranslate2

    from bench.quality import spoken

    wav, _, noisy = spoken(23, "Who is the head baker at Quillfeather Bakery?", tmp_path)
    assert noisy
    audio = load_audio(wav)
    clip = speech_clip(audio, vad.find_speech(audio))          # as `ask --wav` cuts it
    cfg = transcriber._cfg
    assert cfg.question_margin == 0.02
    plain = WhisperTranscriber(dataclasses.replace(cfg, question_margin=0.0), vad=transcriber._vad)
    ctranslate2.set_random_seed(1023)
    kept, _ = transcriber.transcribe(clip, hints=quality_kb.speech_hints)
    ctranslate2.set_random_seed(1023)
    best, _ = plain.transcribe(clip, hints=quality_kb.speech_hints)
    assert _plain(kept).startswith("who is") and "quillfeather bakery" in _plain(kept), kept
    assert not _plain(best).startswith("who"), best
    assert _plain(best).split()[-4:] == _plain(kept).split()[-4:], (best, kept)   # the same words after


def test_the_tie_break_only_settles_near_ties() -> None:
    readings = [("It's not that may correct Quillfeather Bakery", -0.657),
                ("Who is not that may correct Quillfeather Bakery", -0.660),
                ("Is not that may correct Quillfeather Bakery", -0.689)]
    assert prefer_question(readings, 0.02) == 1
    assert prefer_question(readings, 0.0) == 0                          # off
    assert prefer_question(readings, 0.001) == 0                        # not near enough
    assert prefer_question(readings[::-1][:2], 0.05) == 0               # the best is a question already
    statement = [("Tell me a joke about penguins", -0.60), ("Tell me a joke about penguin", -0.61)]
    assert prefer_question(statement, 0.5) == 0                         # nothing to prefer
    assert reads_as_question("What's the phone number?") and reads_as_question("  how tall is it")
    assert not reads_as_question("Whatever happens, tell me") and not reads_as_question("Show me")
