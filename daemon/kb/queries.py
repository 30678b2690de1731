"""Questions to the knowledge base: passages, relevance, hotwords and the sentences to quote.

A mixin of :class:`daemon.kb.index.KnowledgeBase`. Searches hold ``_lock`` only while they
read the index; the question's own embedding goes first through the shared
:class:`EmbedGate`, so it waits for one indexing batch at most.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.config import RagConfig
from daemon.kb.clause_vectors import ClauseVectors
from daemon.kb.embed_gate import EmbedGate
from daemon.kb.embedder import single_thread
from daemon.kb.hybrid import KEYWORD_WEIGHT, fuse
from daemon.kb.indexer import FileIndexer
from daemon.kb.select import select_sentences
from daemon.kb.textutil import raw_words, stem
from daemon.kb.vocab import names_outside, speech_terms, unknown_words
from daemon.messages import Passage

if TYPE_CHECKING:
    from daemon.kb.state import IndexState

DENSE_CANDIDATES = 50


class Queries:
    """Retrieval and selection; expects the attributes KnowledgeBase defines."""

    cfg: RagConfig
    _lock: threading.RLock
    _state: "IndexState"
    _opened: bool
    _gate: EmbedGate
    _clauses: ClauseVectors
    _query_cache: tuple[str, np.ndarray] | None

    if TYPE_CHECKING:
        def open(self, progress: Any = None) -> None: ...
        def _file_indexer(self) -> FileIndexer: ...
        def _get_embedder(self) -> Any: ...

    def retrieve(self, query: str, top_k: int | None = None) -> list[Passage]:
        """Best passages first; ``score`` is a cosine-scale fused score (see ``is_relevant``)."""
        query = " ".join(query.split())
        if not self._opened:
            self.open()
        with self._lock:
            empty = not self._state.chunks
        if not query or empty:
            return []
        k = top_k or self.cfg.top_k
        vector = self._query_vector(query)
        with self._lock:
            state = self._state
            if state.vectors is None:
                return []
            dense = dict(state.vectors.search(vector, max(DENSE_CANDIDATES, 10 * k)))
            keyword: dict[int, float] = {}
            if self.cfg.hybrid:
                keyword = state.keywords.scores(query, also=dense, limit=DENSE_CANDIDATES)
                dense.update(state.vectors.similarity(vector, [i for i in keyword if i not in dense]))
            ranked = fuse(dense, keyword, KEYWORD_WEIGHT)[:k]
            return [self._passage(cid, score) for cid, score in ranked]

    def _passage(self, chunk_id: int, score: float) -> Passage:
        chunk = self._state.chunks[chunk_id]
        return Passage(text=chunk.text, source=chunk.source, score=round(score, 4),
                       position=chunk.position, heading=chunk.heading)

    def is_relevant(self, passages: list[Passage]) -> bool:
        """True when the best passage clears ``rag.relevance_threshold`` (else: chat path)."""
        return bool(passages) and passages[0].score >= self.cfg.relevance_threshold

    def hotwords_for(self, query: str | None = None, limit: int = 20) -> str:
        """Distinctive knowledge-base terms for speech recognition, most relevant first."""
        if not self._opened:
            self.open()
        related: dict[str, float] = {}
        sources: list[str] = []
        if query and query.strip():
            with self._lock:
                related = self._state.keywords.fuzzy_matches(query)
            passages = self.retrieve(query, top_k=3)
            sources = list(dict.fromkeys(p.source for p in passages if p.score >= self.cfg.relevance_threshold))
        with self._lock:
            return ", ".join(self._state.vocab.hotwords(related, sources, limit))

    def speech_hints(self, heard: str, limit: int = 5) -> str:
        """Hotwords for a second recognition pass over what was first heard as ``heard``: the
        terms it seems to say (misheard names), then the subjects of the documents it retrieves."""
        if not heard.strip() or not self._opened:
            return ""
        with self._lock:
            related = self._state.keywords.fuzzy_matches(heard)
            heard_terms = self._state.vocab.heard_alike(related, limit=3)
        titles = [p.heading.split(" > ")[0] for p in self.retrieve(heard, top_k=10) if p.heading]
        return ", ".join(speech_terms(heard_terms, list(dict.fromkeys(titles))[:3], limit))

    def vocabulary(self, limit: int | None = None) -> list[str]:
        """The distinctive terms, most distinctive first."""
        with self._lock:
            terms = self._state.vocab.terms()
        return terms[:limit] if limit else terms

    def select_context(self, question: str, passages: list[Passage], max_sentences: int) -> list[Passage]:
        """The few sentences of the relevant passages that best answer ``question``; none when
        the question names something the knowledge base never mentions ("Mount Everest"), which
        similar wording ("how tall is the tower") must not turn into a claimed source."""
        # The best passage's document is relevant as a whole: its other passages may hold the
        # answer even when they score lower ("212 steps" under "History" for a garbled question).
        best = passages[0].source if passages else ""
        keep = [p for p in passages if p.source == best or p.score >= self.cfg.relevance_threshold]
        if not keep or self._names_elsewhere(question):
            return []
        query = " ".join(question.split())
        cached = self._query_cache
        vector = cached[1] if cached and cached[0] == query else None
        return select_sentences(question, keep, max_sentences, query_vector=vector,
                                embed=lambda texts: self._clauses.lookup(texts, self._embed_few))

    def _names_elsewhere(self, question: str) -> bool:
        """The question names something (a capitalised run) that no document mentions, and
        says nothing that is, or sounds like, one of the knowledge base's own names."""
        common = self._file_indexer().common_words
        with self._lock:
            keywords = self._state.keywords
            indexed = {w for w in raw_words(question) if keywords.has_term(stem(w))}
            named = bool(names_outside(question, indexed))
            # A word no document and no dictionary holds ("How tall is my turver?", Whisper's
            # "Mount Everest") is a name too, unless it sounds at all like one of the KB's.
            if not named and not unknown_words(question, indexed, common):
                return False
            names = self._state.vocab.known_words()
            if any(len(w) >= 4 and (w in names or stem(w) in names) for w in raw_words(question)):
                return False
            heard = keywords.fuzzy_matches(question)
        floor = 0.3 if named else 1e-9
        return not any(weight >= floor for weight in heard.values())

    # ------------------------------------------------------------------ embedding
    def _embed_few(self, texts: list[str]) -> np.ndarray:
        """Short texts on the answer's critical path (sentence selection): one thread."""
        with self._gate.urgent(), single_thread():
            vectors = self._get_embedder().get_text_embedding_batch(texts)
        return np.asarray(vectors, dtype=np.float32)

    def _query_vector(self, query: str) -> np.ndarray:
        cached = self._query_cache
        if cached and cached[0] == query:
            return cached[1]
        with self._gate.urgent(), single_thread():
            vector = np.asarray(self._get_embedder().get_query_embedding(query), dtype=np.float32)
        self._query_cache = (query, vector)
        return vector
