"""Sentence-level context selection: hand a small model only the clause that answers.

Measured on SmolLM2-135M (see docs/quality.md): given several sentences it often answers from
the wrong one ("The light has been automatic for 19 years" for "how many steps"), and given
a sentence that joins two facts with a semicolon it mixes them up. Given the single clause
that holds the answer, it copies the fact. So passages are cut into clauses (sentences,
split again at semicolons and at colons that end a long clause, but not after a short label
such as "Capacity:"), and the clauses are ranked, best first. A clause is at most
``MAX_CLAUSE_CHARS`` long: a document without full stops (one line of a megabyte) would
otherwise be one "sentence" as long as a chunk, handed to the model and read aloud whole.

A clause is scored by embedding similarity to the question (the clause read with its
heading, so "It was designed by..." still knows it is about the lighthouse), plus the share
of the question's words found in the clause or its heading (so a word every clause of a
section shares through its heading, like "light" under "The light", does not single one
out), plus a little of the passage's own retrieval score.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from typing import Callable, Sequence

import numpy as np

from daemon.kb.chunking import bounded_pieces
from daemon.kb.textutil import index_terms, split_sentences
from daemon.messages import Passage

Embed = Callable[[list[str]], np.ndarray]

LEXICAL_WEIGHT = 0.7          # 0.5 -> 0.7: garbled questions keep their few right words (docs/quality.md)
PASSAGE_WEIGHT = 0.1
TYPE_WEIGHT = 0.21           # a clause holding the kind of answer asked for (a number for "how many"); kept at 0.3 x LEXICAL_WEIGHT
ALIKE_FLOOR = 0.7            # spelling similarity from which a misheard word counts as the word...
ALIKE_MIN_LETTERS = 5        # ...when both are this long (short words are alike by chance)
LABEL_WORDS = 4              # "Head baker: ..." keeps its label; a longer clause before ":" is split off
MAX_CLAUSE_CHARS = 300       # longer clauses are cut at spaces (the sample documents' longest: 112)

_NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
                 "hundred thousand million half dozen").split()
_MONTHS = ("january february march april may june july august september october november december").split()
_DAYS = "monday tuesday wednesday thursday friday saturday sunday weekday weekend".split()
_COLOURS = ("red green blue yellow white black orange purple pink brown grey gray violet amber gold silver "
            "cream").split()
# What kind of answer a question asks for, and the words of a clause that can supply it.
_NUMBERS = re.compile(r"\d|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_ANSWER_TYPES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (re.compile(r"\b(?:what|which) (?:colou?r)\b"), re.compile(r"\b(?:" + "|".join(_COLOURS) + r")\b", re.I)),
    (re.compile(r"\b(?:what|which) day\b|\bday of the week\b"),
     re.compile(r"\b(?:" + "|".join(_DAYS) + r")s?\b", re.I)),
    (re.compile(r"\bhow (?:much|many|long|often|tall|far|old|big|high|heavy|wide|deep|fast|soon|hot|warm|cold)\b|"
                r"\b(?:what|which) (?:time|year|date|number|temperature|percentage)\b|\bwhen\b|\bsince when\b"),
     re.compile(_NUMBERS.pattern + r"|\b(?:" + "|".join(_MONTHS + _DAYS) + r")\b|\bnoon\b|\bmidnight\b", re.I)),
    # A person's name: a capitalised word inside the clause that is not a month or a day.
    (re.compile(r"\bwho\b|\bwhose\b"),
     re.compile(r"(?<=\w )(?!(?:" + "|".join(m.title() for m in _MONTHS + _DAYS) + r")s?\b)[A-Z][a-z]+")),
)

_HOW_LONG = re.compile(r"\bhow long\b")
_FREQUENCY = re.compile(r"\bevery\s+\S+(?:\s+\S+)?", re.IGNORECASE)

# Text in a document that talks to the assistant is an attempt to steer it, not a fact: such
# clauses are never handed to the model (the prompt also frames notes as quotes).
_STEERING = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|prompts?|rules?|previous|above|"
    r"everything)\b|\b(?:you are now|from now on|pretend (?:to be|you are)|system prompt|jailbreak)\b|"
    r"\b(?:say|reply|respond|answer)\b.{0,30}\b(?:only|instead)\b|\b(?:assistant|AI|language model)\b.{0,20}\b(?:must|should)\b",
    re.IGNORECASE)
_SEMICOLON = re.compile(r";\s+")
_COLON = re.compile(r":\s+")


@dataclass(frozen=True)
class _Unit:
    passage: int
    text: str
    context: str             # the clause as the scorers read it: heading first


def select_sentences(
    question: str,
    passages: Sequence[Passage],
    max_sentences: int,
    *,
    embed: Embed | None = None,
    query_vector: np.ndarray | None = None,
) -> list[Passage]:
    """The best ``max_sentences`` clauses of the passages, best first, one :class:`Passage` each.

    Each returned passage keeps its source, position, heading and score; its text is the
    clause. ``embed`` maps texts to vectors (any scale; they are normalised here); without
    it the choice is lexical only.
    """
    units = _units(passages)
    if not units or max_sentences <= 0:
        return []
    scores = rank_units(question, passages, units, embed=embed, query_vector=query_vector)
    best = np.argsort(-scores, kind="stable")[:max_sentences].tolist()
    return [replace(passages[units[i].passage], text=units[i].text) for i in best]


def rank_units(
    question: str,
    passages: Sequence[Passage],
    units: list[_Unit],
    *,
    embed: Embed | None = None,
    query_vector: np.ndarray | None = None,
) -> np.ndarray:
    """One score per clause: lexical share, embedding similarity and passage score combined."""
    scores = _lexical_scores(question, [u.context for u in units]) * LEXICAL_WEIGHT
    scores = scores + TYPE_WEIGHT * _answer_type_scores(question, [u.text for u in units])
    if embed is not None:
        scores = scores + _dense_scores(question, [u.context for u in units], embed, query_vector)
    return scores + PASSAGE_WEIGHT * np.array([passages[u.passage].score for u in units])


def clauses(sentence: str) -> list[str]:
    """A sentence cut at semicolons, and at a colon that follows more than a short label;
    a clause still longer than ``MAX_CLAUSE_CHARS`` is cut at spaces (mid-word only where
    it has none) into pieces of at most that."""
    out: list[str] = []
    for part in _SEMICOLON.split(sentence):
        pieces = _COLON.split(part, maxsplit=1)
        if len(pieces) == 2 and len(pieces[0].split()) > LABEL_WORDS:
            out.extend(pieces)
        else:
            out.append(part)
    # One character spare: _as_sentence may add a full stop.
    short = [piece for p in out for piece in bounded_pieces(p.strip(), MAX_CLAUSE_CHARS - 1)]
    return [_as_sentence(p) for p in short if any(ch.isalnum() for ch in p)]


def _as_sentence(text: str) -> str:
    text = text.strip()
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?\"'”)" else text + "."


def _units(passages: Sequence[Passage]) -> list[_Unit]:
    """Every clause once (overlapping chunks repeat sentences), with its heading as context."""
    seen: set[str] = set()
    units = []
    for p, passage in enumerate(passages):
        for clause, context in clause_contexts(passage.text, passage.heading):
            key = " ".join(clause.lower().split())
            if key not in seen:
                seen.add(key)
                units.append(_Unit(p, clause, context))
    return units


def clause_contexts(text: str, heading: str) -> list[tuple[str, str]]:
    """The clauses of a chunk that may be handed to the model, each with the text its vector
    is computed from (the clause after its heading)."""
    heading = heading.replace(" > ", ", ") if heading else ""
    out = []
    for sentence in split_sentences(text):
        if _STEERING.search(sentence):
            continue
        for clause in clauses(sentence):
            out.append((clause, f"{heading}: {clause}" if heading else clause))
    return out


def _lexical_scores(question: str, texts: list[str]) -> np.ndarray:
    """Share of the question's words (weighted by rarity among these texts) each contains; a
    question word none of them holds counts, scaled by similarity, where a spelling-alike word
    stands ("discailing" for "descaling": what the recogniser made of a rarer word)."""
    q_terms = set(index_terms(question))
    if not q_terms:
        return np.zeros(len(texts))
    t_terms = [set(index_terms(t)) for t in texts]
    alike = _spelled_alike(q_terms, set().union(*t_terms))
    df = Counter(t for terms in t_terms for t in terms & q_terms)
    n = len(texts)
    weight = {t: math.log(1.0 + n / (df[t] or 0.5)) for t in q_terms}
    total = sum(weight.values())
    scores = []
    for terms in t_terms:
        found = sum(weight[t] for t in terms & q_terms)
        found += sum(weight[q] * max((sim for term, sim in alike.get(q, ()) if term in terms), default=0.0)
                     for q in q_terms - terms)
        scores.append(found / total)
    return np.array(scores)


def _spelled_alike(q_terms: set[str], text_terms: set[str]) -> dict[str, list[tuple[str, float]]]:
    """For each longer question word found in no text: text words spelled much like it."""
    out: dict[str, list[tuple[str, float]]] = {}
    for q in q_terms - text_terms:
        if len(q) < ALIKE_MIN_LETTERS or not q.isalpha():
            continue
        for term in text_terms:
            if len(term) >= ALIKE_MIN_LETTERS and abs(len(term) - len(q)) <= 3:
                ratio = SequenceMatcher(None, q, term).ratio()
                if ratio >= ALIKE_FLOOR:
                    out.setdefault(q, []).append((term, ratio))
    return out


def _answer_type_scores(question: str, texts: list[str]) -> np.ndarray:
    """1 for each clause that holds the kind of answer asked for ("how many" -> a number)."""
    asked = question.lower()
    if _HOW_LONG.search(asked):
        # "How long" asks for a duration: the number in "every 6 weeks" says how often.
        texts = [_FREQUENCY.sub(" ", t) for t in texts]
    for question_pattern, answer_pattern in _ANSWER_TYPES:
        if question_pattern.search(asked):
            return np.array([1.0 if answer_pattern.search(t) else 0.0 for t in texts])
    return np.zeros(len(texts))


def _dense_scores(question: str, texts: list[str], embed: Embed, query_vector: np.ndarray | None) -> np.ndarray:
    if query_vector is None:
        matrix = np.asarray(embed([question] + texts), dtype=np.float32)
        query_vector, matrix = matrix[0], matrix[1:]
    else:
        matrix = np.asarray(embed(texts), dtype=np.float32)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    q = np.asarray(query_vector, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    return matrix @ q
