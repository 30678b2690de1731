"""The clause chunker: clauses come out as soon as they are complete, nothing is lost,
and decimals, abbreviations and initials are never cut."""

from __future__ import annotations

import random
import re

import pytest

from daemon.stages.chunker import ClauseChunker

REPLY = (
    "Sure! The Zephyr kettle holds 1.7 litres, e.g. enough for six cups. Mr. Smith, who wrote "
    "the manual, says the café opens at 6.45 in the morning, but on Sundays it opens later; "
    "check the handbook. J. R. Stevenson built the U.S. branch in 1887. Thanks!"
)


def _stream(text: str, chunker: ClauseChunker, seed: int = 0) -> list[str]:
    """Feed text in random token-sized pieces, as an LLM would stream it."""
    rng = random.Random(seed)
    out: list[str] = []
    i = 0
    while i < len(text):
        n = rng.randint(1, 7)
        out += chunker.feed(text[i:i + n])
        i += n
    return out + chunker.flush()


def _words(text: str) -> list[str]:
    return text.split()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_pieces_give_the_same_clauses_as_whole_text(seed: int) -> None:
    whole = ClauseChunker()
    expected = whole.feed(REPLY) + whole.flush()
    assert _stream(REPLY, ClauseChunker(), seed) == expected
    assert _words(" ".join(expected)) == _words(REPLY), "no text lost or reordered"


def test_clause_boundaries_respect_numbers_and_abbreviations() -> None:
    c = ClauseChunker()
    clauses = c.feed(REPLY) + c.flush()
    assert clauses[0] == "Sure!"                                  # a short first clause
    assert "The Zephyr kettle holds 1.7 litres, e.g. enough for six cups." in clauses
    assert any("at 6.45 in the morning" in cl for cl in clauses)
    assert any(cl.startswith("J. R. Stevenson built the U.S. branch") for cl in clauses)
    assert clauses[-1] == "Thanks!"
    for cl in clauses:
        assert not re.search(r"\b(e\.g|Mr|J|R|U\.S)\.$", cl), cl   # never cut after these


def test_a_clause_is_released_as_soon_as_it_is_complete() -> None:
    c = ClauseChunker()
    assert c.feed("The lighthouse is tall") == []
    assert c.feed(".") == []                      # "." may still be a decimal point: wait
    assert c.feed(" It") == ["The lighthouse is tall."]
    assert c.feed(" has 132 steps, and a keeper") == []     # a short clause after the first waits
    assert c.flush() == ["It has 132 steps, and a keeper"]


def test_first_clause_splits_at_a_comma_later_ones_need_length() -> None:
    c = ClauseChunker(min_chars=40, first_min_chars=12)
    out = c.feed("Well, the lighthouse keeper, Anna, lit the lamp, every night, for years. ")
    assert out[0] == "Well, the lighthouse keeper,"                   # first: short is fine
    assert out[1] == "Anna, lit the lamp, every night, for years."    # later: commas wait for length


def test_long_unpunctuated_text_is_cut_at_a_word_boundary() -> None:
    text = "word " * 100
    c = ClauseChunker(max_chars=120, first_max_chars=60)
    clauses = c.feed(text) + c.flush()
    assert len(clauses) > 2
    assert len(clauses[0]) <= 60 and all(len(cl) <= 120 for cl in clauses)
    assert all(set(cl.split()) == {"word"} for cl in clauses)


def test_lists_and_lines_are_clauses_and_bare_numbers_are_kept_with_text() -> None:
    c = ClauseChunker()
    clauses = c.feed("Here are the steps:\n1. Fill the kettle\n2. Press the button\n- Wait\n\nDone") + c.flush()
    assert clauses == ["Here are the steps:", "1. Fill the kettle", "2. Press the button", "- Wait", "Done"]


def test_flush_and_reset() -> None:
    c = ClauseChunker()
    assert c.flush() == []
    c.feed("half a sent")
    c.reset()
    assert c.flush() == []
    c.feed("  ...  ")
    assert c.flush() == []                        # punctuation alone is not worth speaking


def test_a_whole_text_with_a_late_full_stop_is_still_cut_at_max_chars() -> None:
    """Say and `speak` feed a whole text at once: a full stop 3,000 characters in made one
    3,000-character clause, which the voice said in one pass of gigabytes."""
    text = "the keeper climbed the stairs " * 100 + "and lit the lamp. Then he slept."
    c = ClauseChunker(max_chars=120, first_max_chars=60)
    clauses = c.feed(text) + c.flush()
    assert len(clauses[0]) <= 60 and all(len(cl) <= 120 for cl in clauses)
    assert " ".join(clauses).split() == text.split()
    assert clauses[-1] == "Then he slept."
