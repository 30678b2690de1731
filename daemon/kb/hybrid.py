"""The keyword side of retrieval, built to survive speech-recognition errors, and the fusion.

* **BM25.** rank-bm25's Okapi scoring (``get_batch_scores``) over term statistics kept up to
  date incrementally here, so a live update costs a dictionary update rather than a re-scan of
  the corpus. The idf is Lucene's always-positive variant, so a knowledge base of one or two
  chunks still scores sensibly.
* **Sound-alike names.** Query words that are not in the index ("mascara in more") are compared,
  one to three words at a time, with the knowledge base's distinctive terms ("skerrimore") by a
  consonant-skeleton key and by spelling; a good match joins the query with partial weight.
* **Normalised keyword score.** Per chunk, the share of the question's idf mass the chunk
  covers, in [0, 1]; unknown words count as fully informative, so "tell me a joke" scores 0.
* **Fusion.** ``cosine + keyword_weight * keyword score * (1 - cosine)``: the scale of the
  cosine is kept, so ``rag.relevance_threshold`` means the same with and without hybrid.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Iterable, Sequence

import numpy as np
from rank_bm25 import BM25Okapi

from daemon.kb.textutil import STOPWORDS, index_terms, phonetic_key, raw_words, stem

KEYWORD_WEIGHT = 0.5         # how much a perfect keyword match closes the gap to 1 (0.4 -> 0.5: docs/quality.md)
COMMON_WORD_WEIGHT = 0.5    # a matching plain word counts half as much as a matching name
FUZZY_FLOOR = 0.6            # similarity below which a sound-alike match is ignored
FUZZY_FULL = 0.95            # similarity that counts as the word itself
SELECTIVE_SHARE = 0.05       # terms in more chunks than this share do not add candidates...
SELECTIVE_MIN = 50           # ...unless they are in at most this many chunks


class _IncrementalBM25(BM25Okapi):
    """rank-bm25's Okapi BM25 over statistics supplied by :class:`KeywordIndex`."""

    def __init__(self, doc_freqs: list[dict[str, int]], doc_len: list[int], nd: dict[str, int]) -> None:
        self.k1, self.b, self.epsilon = 1.5, 0.75, 0.25
        self.tokenizer = None
        self.corpus_size = len(doc_freqs)
        self.doc_freqs = doc_freqs
        self.doc_len = np.asarray(doc_len)     # rank-bm25 indexes it with a list of rows
        self.avgdl = (sum(doc_len) / len(doc_len)) if doc_len else 1.0
        self.idf: dict[str, float] = {}
        self.average_idf = 0.0
        self._calc_idf(nd)

    def _calc_idf(self, nd: dict[str, int]) -> None:
        n = self.corpus_size
        self.idf = {word: math.log(1.0 + (n - freq + 0.5) / (freq + 0.5)) for word, freq in nd.items()}
        self.average_idf = (sum(self.idf.values()) / len(self.idf)) if self.idf else 0.0

    def unseen_idf(self) -> float:
        """The idf of a word found in no chunk: as informative as a word found in one."""
        n = self.corpus_size
        return math.log(1.0 + (n - 1 + 0.5) / 1.5)


@dataclass
class _Concept:
    """One piece of the question: alternatives (term -> weight) and what a full match is worth."""

    alternatives: dict[str, float]
    ideal: float


@dataclass(frozen=True)
class CountedTerms:
    """The keyword statistics of one document's chunks, counted before they are merged:
    a Counter per chunk and, per term, the positions of the chunks that hold it."""

    counts: list[Counter[str]]
    positions: dict[str, list[int]]

    @classmethod
    def of(cls, counts: list[Counter[str]]) -> "CountedTerms":
        positions: dict[str, list[int]] = defaultdict(list)
        for i, tf in enumerate(counts):
            for term in tf:
                positions[term].append(i)
        return cls(counts, dict(positions))


@dataclass
class KeywordIndex:
    """Term statistics for every chunk, searchable by BM25 with sound-alike expansion."""

    _tf: dict[int, Counter[str]] = field(default_factory=dict)
    _postings: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    _bm25: _IncrementalBM25 | None = None
    _rows: dict[int, int] = field(default_factory=dict)
    _dirty: bool = True
    _fuzzy_keys: dict[str, str] = field(default_factory=dict)               # term -> sound key
    _fuzzy_grams: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    # ------------------------------------------------------------------ updates
    def add(self, chunk_id: int, text: str) -> None:
        tf = Counter(index_terms(text))
        self._tf[chunk_id] = tf
        for term in tf:
            self._postings[term].add(chunk_id)
        self._dirty = True

    def add_counted(self, chunk_ids: Sequence[int], counted: "CountedTerms") -> None:
        """Index chunks whose terms were counted beforehand (outside the lock searches wait
        for): one set update per term, not one per term of every chunk."""
        ids = list(chunk_ids)
        for cid, tf in zip(ids, counted.counts):
            self._tf[cid] = tf
        for term, where in counted.positions.items():
            self._postings[term].update(map(ids.__getitem__, where))
        self._dirty = True

    def remove_many(self, chunk_ids: Iterable[int]) -> None:
        """Forget many chunks (a whole document): one set difference per term they hold."""
        gone = set(chunk_ids)
        counts = [tf for tf in (self._tf.pop(cid, None) for cid in gone) if tf is not None]
        for term in set().union(*counts):
            posting = self._postings.get(term)
            if posting is None:
                continue
            rest = posting - gone
            if rest:
                self._postings[term] = rest
            else:
                del self._postings[term]
        self._dirty = True

    def refresh(self) -> None:
        """Recompute the BM25 statistics after updates (cheap: no text is re-read)."""
        if not self._dirty:
            return
        ids = list(self._tf)
        self._rows = {cid: row for row, cid in enumerate(ids)}
        freqs: list[dict[str, int]] = [self._tf[cid] for cid in ids]    # shared, not copied
        lengths = [sum(tf.values()) for tf in freqs]
        nd = {term: len(posting) for term, posting in self._postings.items()}
        self._bm25 = _IncrementalBM25(freqs, lengths, nd)
        self._dirty = False

    def set_fuzzy_terms(self, terms: Iterable[str]) -> None:
        """The distinctive terms (index form) that sound-alike query words may stand for.

        Applied as a difference with the current set, so a live update costs little.
        """
        wanted = {t for t in terms if t.isalpha() and len(t) >= 4 and t in self._postings}
        for term in set(self._fuzzy_keys) - wanted:
            for gram in _bigrams(self._fuzzy_keys.pop(term)):
                holders = self._fuzzy_grams.get(gram)
                if holders is not None:
                    holders.discard(term)
                    if not holders:
                        del self._fuzzy_grams[gram]
        for term in wanted - set(self._fuzzy_keys):
            key = phonetic_key(term)
            if len(key) >= 3:
                self._fuzzy_keys[term] = key
                for gram in _bigrams(key):
                    self._fuzzy_grams[gram].add(term)

    def __len__(self) -> int:
        return len(self._tf)

    def has_term(self, term: str) -> bool:
        """Whether any chunk holds ``term`` (an index form: lower-cased, stemmed)."""
        return term in self._postings

    # ------------------------------------------------------------------ search
    def scores(self, query: str, also: Iterable[int] = (), limit: int = 200) -> dict[int, float]:
        """chunk id -> keyword score in [0, 1], for the chunks that hold a selective query term
        plus ``also`` (the dense candidates, so both sides are scored on the same chunks)."""
        self.refresh()
        bm25 = self._bm25
        if bm25 is None or not self._tf:
            return {}
        concepts = self._concepts(query, bm25)
        total = sum(c.ideal for c in concepts)
        terms = {t for c in concepts for t in c.alternatives if t in self._postings}
        if total <= 0 or not terms:
            return {}
        # A term found in a large share of the chunks has a low idf: it may add to a score but
        # does not pull thousands of chunks in as candidates (that is what made queries slow).
        cap = max(SELECTIVE_MIN, int(SELECTIVE_SHARE * len(self._tf)))
        dense_pool = {c for c in also if c in self._tf}
        pool = set(dense_pool)
        for term in terms:
            if len(self._postings[term]) <= cap:
                pool |= self._postings[term]
        candidates = sorted(pool)
        if not candidates:
            return {}
        position = {c: i for i, c in enumerate(candidates)}
        per_term: dict[str, np.ndarray] = {}
        for term in terms:
            hits = [c for c in candidates if c in self._postings[term]] if len(self._postings[term]) > len(candidates) \
                else [c for c in self._postings[term] if c in position]
            column = np.zeros(len(candidates))
            if hits:
                column[[position[c] for c in hits]] = bm25.get_batch_scores([term], [self._rows[c] for c in hits])
            per_term[term] = column
        covered = np.zeros(len(candidates))
        for concept in concepts:
            best = np.zeros(len(candidates))
            for term, weight in concept.alternatives.items():
                if term in per_term:
                    best = np.maximum(best, weight * per_term[term])
            covered += np.minimum(best, concept.ideal)
        result = covered / total
        keep = set(np.argsort(-result)[:limit].tolist()) | {position[c] for c in dense_pool}
        return {candidates[i]: float(result[i]) for i in keep if result[i] > 0}

    def fuzzy_matches(self, query: str) -> dict[str, float]:
        """Distinctive terms the query seems to say, misheard or not: term -> weight in (0, 1]."""
        self.refresh()
        words = raw_words(query)
        out: dict[str, float] = {}
        for word in words:
            term = stem(word)
            if term in self._fuzzy_keys:
                out[term] = 1.0
        for term, weight, _span in self._fuzzy(words):
            out[term] = max(out.get(term, 0.0), weight)
        return out

    def _concepts(self, query: str, bm25: _IncrementalBM25) -> list[_Concept]:
        words = raw_words(query)
        unseen = bm25.unseen_idf()

        def idf(term: str) -> float:
            return bm25.idf.get(term, unseen)

        concepts: list[_Concept] = []
        covered_terms: set[str] = set()
        for group in _group_spans(self._fuzzy(words)):
            start, end = group[0], group[1]
            covered = [t for w in words[start:end] for t in index_terms(w)]
            covered_terms.update(covered)
            # One name heard as several words ("tool lack") is still one thing asked about.
            ideal = max((idf(t) for t in covered), default=0.0)
            if ideal > 0:
                concepts.append(_Concept(dict(group[2]), ideal))
        for term in dict.fromkeys(index_terms(query)):
            if term not in covered_terms:
                concepts.append(_Concept({term: self._term_weight(term)}, idf(term)))
        return concepts

    def _term_weight(self, term: str) -> float:
        """Full weight for the knowledge base's own names and codes; less for a plain English
        word, which a question about something else shares by chance ("how *tall* is Everest")."""
        if term in self._fuzzy_keys or not term.isalpha():
            return 1.0
        return COMMON_WORD_WEIGHT

    def _fuzzy(self, words: list[str]) -> list[tuple[str, float, tuple[int, int]]]:
        """Sound-alike matches for runs of 1-3 words that are not themselves indexed terms."""
        if not self._fuzzy_keys:
            return []
        eligible = [all(t not in self._postings for t in index_terms(w)) for w in words]
        hits: list[tuple[str, float, tuple[int, int]]] = []
        for start in range(len(words)):
            for end in range(start + 1, min(start + 3, len(words)) + 1):
                if not all(eligible[start:end]):
                    break
                segment = words[start:end]
                if all(w in STOPWORDS for w in segment) or sum(map(len, segment)) < 4:
                    continue
                hits.extend((t, w, (start, end)) for t, w in self._match_segment(segment))
        return hits

    def _match_segment(self, segment: list[str]) -> list[tuple[str, float]]:
        key = phonetic_key(" ".join(segment))
        letters = "".join(ch for w in segment for ch in w if ch.isalpha())
        if len(key) < 2:
            return []
        grams = _bigrams(key)
        counts: Counter[str] = Counter()
        for gram in grams:
            counts.update(self._fuzzy_grams.get(gram, ()))
        out = []
        for term, shared in counts.items():
            if shared < 2 or abs(len(self._fuzzy_keys[term]) - len(key)) > 3:
                continue
            similarity = 0.5 * SequenceMatcher(None, self._fuzzy_keys[term], key).ratio() + \
                0.5 * SequenceMatcher(None, term, letters).ratio()
            weight = min(1.0, (similarity - FUZZY_FLOOR) / (FUZZY_FULL - FUZZY_FLOOR))
            if weight > 0:
                out.append((term, weight))
        return out


def _bigrams(key: str) -> set[str]:
    padded = f"^{key}$"
    return {padded[i:i + 2] for i in range(len(padded) - 1)}


def _group_spans(hits: list[tuple[str, float, tuple[int, int]]]) -> list[tuple[int, int, dict[str, float]]]:
    """Merge overlapping word spans into one concept each, keeping every candidate term."""
    groups: list[tuple[int, int, dict[str, float]]] = []
    for term, weight, (start, end) in sorted(hits, key=lambda h: h[2]):
        if groups and start < groups[-1][1]:
            g_start, g_end, alts = groups[-1]
            alts[term] = max(alts.get(term, 0.0), weight)
            groups[-1] = (g_start, max(g_end, end), alts)
        else:
            groups.append((start, end, {term: weight}))
    return groups


def fuse(dense: dict[int, float], keyword: dict[int, float], weight: float = KEYWORD_WEIGHT) -> list[tuple[int, float]]:
    """Normalised score fusion on the cosine scale, best first.

    Keyword evidence closes part of the gap between the cosine and 1 (``d + w * k * (1 - d)``),
    so scores stay in [-1, 1] without clipping ties, and a chunk with no keyword match keeps
    exactly its cosine.
    """
    ids = set(dense) | set(keyword)
    fused = {}
    for i in ids:
        d = dense.get(i, 0.0)
        fused[i] = d + weight * keyword.get(i, 0.0) * (1.0 - d)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
