"""Sentence-level context selection: hand a small model only the sentences that answer.

A 135M-parameter model given three whole passages tends to answer from the wrong one; given
the two or three sentences that match the question, it copies the fact. Sentences are scored
by embedding similarity to the question (the sentence read with its heading, so "It was
designed by..." still knows it is about the lighthouse) plus the share of the question's
words it contains, and a little of the passage's own retrieval score.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from daemon.kb.textutil import index_terms, split_sentences
from daemon.messages import Passage

Embed = Callable[[list[str]], np.ndarray]

LEXICAL_WEIGHT = 0.5
PASSAGE_WEIGHT = 0.1


def select_sentences(
    question: str,
    passages: Sequence[Passage],
    max_sentences: int,
    *,
    embed: Embed | None = None,
    query_vector: np.ndarray | None = None,
) -> list[Passage]:
    """The passages cut down to their best ``max_sentences`` sentences in all, best passage first.

    Each returned :class:`Passage` keeps its source, position, heading and score; its text holds
    the chosen sentences in their original order. Passages with no chosen sentence are dropped.
    ``embed`` maps texts to vectors (any scale; they are normalised here); without it the
    choice is lexical only.
    """
    units = _sentences(passages)
    if not units or max_sentences <= 0:
        return []
    scores = _lexical_scores(question, [s for _, _, s in units]) * LEXICAL_WEIGHT
    if embed is not None:
        scores = scores + _dense_scores(question, passages, units, embed, query_vector)
    scores = scores + PASSAGE_WEIGHT * np.array([passages[p].score for p, _, _ in units])
    best = sorted(np.argsort(-scores, kind="stable")[:max_sentences].tolist())
    chosen: dict[int, list[str]] = {}
    for i in best:
        passage_index, _, sentence = units[i]
        chosen.setdefault(passage_index, []).append(sentence)
    return [replace(passages[p], text=" ".join(chosen[p])) for p in sorted(chosen)]


def _sentences(passages: Sequence[Passage]) -> list[tuple[int, int, str]]:
    """(passage index, sentence index, sentence), without repeats from overlapping chunks."""
    seen: set[str] = set()
    units = []
    for p, passage in enumerate(passages):
        for s, sentence in enumerate(split_sentences(passage.text)):
            key = " ".join(sentence.lower().split())
            if key not in seen:
                seen.add(key)
                units.append((p, s, sentence))
    return units


def _lexical_scores(question: str, sentences: list[str]) -> np.ndarray:
    """Share of the question's words (weighted by rarity among these sentences) each contains."""
    q_terms = set(index_terms(question))
    if not q_terms:
        return np.zeros(len(sentences))
    s_terms = [set(index_terms(s)) for s in sentences]
    df = Counter(t for terms in s_terms for t in terms & q_terms)
    n = len(sentences)
    weight = {t: math.log(1.0 + n / (df[t] or 0.5)) for t in q_terms}
    total = sum(weight.values())
    return np.array([sum(weight[t] for t in terms & q_terms) / total for terms in s_terms])


def _dense_scores(
    question: str,
    passages: Sequence[Passage],
    units: list[tuple[int, int, str]],
    embed: Embed,
    query_vector: np.ndarray | None,
) -> np.ndarray:
    texts = [f"{passages[p].heading}: {s}" if passages[p].heading else s for p, _, s in units]
    if query_vector is None:
        matrix = np.asarray(embed([question] + texts), dtype=np.float32)
        query_vector, matrix = matrix[0], matrix[1:]
    else:
        matrix = np.asarray(embed(texts), dtype=np.float32)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    q = np.asarray(query_vector, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    return matrix @ q
