"""The in-memory index: documents, chunks, their vectors, keyword statistics and vocabulary.

Not thread-safe by itself: :class:`daemon.kb.index.KnowledgeBase` holds its lock around every
call. Vectors of removed chunks are kept for a while (keyed by a hash of the embedded text), so
a file that is deleted and re-created, or a folder moved away and back, is not re-embedded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daemon.kb.chunking import ChunkDraft
from daemon.kb.hybrid import CountedTerms, KeywordIndex
from daemon.kb.store import Snapshot
from daemon.kb.vectors import VectorIndex
from daemon.kb.vocab import Vocabulary

RECYCLE_LIMIT = 20000


@dataclass
class ChunkRecord:
    id: int
    source: str
    position: int
    heading: str
    text: str
    digest: str

    @property
    def embed_text(self) -> str:
        return ChunkDraft(self.source, self.position, self.heading, self.text).embed_text


@dataclass
class DocRecord:
    """What is known about one file: its identity on disk, its chunks, or why it failed."""

    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str = ""
    chunk_ids: list[int] = field(default_factory=list)
    error: str = ""
    terms: dict[str, list[float]] = field(default_factory=dict)
    named_by_file: bool = False       # headings come from the file name (a rename changes them)

    def same_file(self, size: int, mtime_ns: int, ctime_ns: int) -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns) == (size, mtime_ns, ctime_ns)


class IndexState:
    """Documents and chunks with their dense and keyword indexes, kept consistent."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.documents: dict[str, DocRecord] = {}
        self.chunks: dict[int, ChunkRecord] = {}
        self.vectors: VectorIndex | None = None
        self.keywords = KeywordIndex()
        self.vocab = Vocabulary()
        self.next_id = 1
        self._by_digest: dict[str, set[int]] = {}
        self._recycle: OrderedDict[str, np.ndarray] = OrderedDict()

    # ------------------------------------------------------------------ queries
    def counts(self) -> tuple[int, int]:
        return sum(1 for d in self.documents.values() if not d.error), len(self.chunks)

    def holds(self, digest: str) -> bool:
        """A chunk of exactly this text is in the index."""
        return bool(self._by_digest.get(digest))

    def known_vector(self, digest: str) -> np.ndarray | None:
        """A vector already computed for exactly this text, if any."""
        ids = self._by_digest.get(digest)
        if ids and self.vectors is not None:
            return self.vectors.vector(next(iter(ids)))
        return self._recycle.get(digest)

    # ------------------------------------------------------------------ updates
    def put_document(self, source: str, record: DocRecord, drafts: list[ChunkDraft], vectors: np.ndarray,
                     counted: CountedTerms | None = None) -> None:
        """Replace everything stored for ``source`` by these chunks (``counted``: their
        keyword statistics, when counted beforehand)."""
        self.remove_document(source)
        if drafts:
            if self.vectors is None:
                self.vectors = VectorIndex(int(vectors.shape[1]), self.device)
            ids = np.arange(self.next_id, self.next_id + len(drafts), dtype=np.int64)
            self.next_id += len(drafts)
            self.vectors.add(ids, vectors)
            if counted is not None and len(counted.counts) == len(drafts):
                for cid, draft in zip(ids.tolist(), drafts):
                    self._add_chunk(ChunkRecord(cid, source, draft.position, draft.heading, draft.text,
                                                draft.digest), keywords=False)
                self.keywords.add_counted(ids.tolist(), counted)
            else:
                for cid, draft in zip(ids.tolist(), drafts):
                    self._add_chunk(ChunkRecord(cid, source, draft.position, draft.heading, draft.text, draft.digest))
            record.chunk_ids = ids.tolist()
        self.documents[source] = record
        if not record.error:
            self.vocab.set_document(source, record.terms)

    def _add_chunk(self, chunk: ChunkRecord, keywords: bool = True) -> None:
        self.chunks[chunk.id] = chunk
        if keywords:
            self.keywords.add(chunk.id, chunk.embed_text)
        self._by_digest.setdefault(chunk.digest, set()).add(chunk.id)

    def remove_document(self, source: str) -> bool:
        record = self.documents.pop(source, None)
        if record is None:
            return False
        self.vocab.remove_document(source)
        if record.chunk_ids and self.vectors is not None:
            for cid in record.chunk_ids:
                chunk = self.chunks.pop(cid, None)
                if chunk is None:
                    continue
                self._recycle[chunk.digest] = self.vectors.vector(cid)
                self._recycle.move_to_end(chunk.digest)
                same = self._by_digest.get(chunk.digest)
                if same is not None:
                    same.discard(cid)
                    if not same:
                        del self._by_digest[chunk.digest]
            self.keywords.remove_many(record.chunk_ids)
            self.vectors.remove(record.chunk_ids)
            while len(self._recycle) > RECYCLE_LIMIT:
                self._recycle.popitem(last=False)
        return True

    def rename_document(self, old: str, new: str) -> bool:
        """A move: same chunks and vectors under a new name (no embedding)."""
        record = self.documents.pop(old, None)
        if record is None:
            return False
        self.remove_document(new)
        self.documents[new] = record
        self.vocab.rename_document(old, new)
        for cid in record.chunk_ids:
            self.chunks[cid].source = new
        return True

    def forget_recycled(self) -> None:
        self._recycle.clear()

    def refresh(self) -> None:
        """Bring the keyword statistics and sound-alike terms up to date after updates."""
        self.keywords.refresh()
        self.keywords.set_fuzzy_terms(self.vocab.index_forms())

    # ------------------------------------------------------------------ persistence
    def snapshot(self, stamp: dict[str, Any]) -> Snapshot:
        ids = sorted(self.chunks)
        dim = self.vectors.dim if self.vectors is not None else 0
        if ids and self.vectors is not None:
            stored_ids, stored = self.vectors.all()
            row = {int(cid): i for i, cid in enumerate(stored_ids)}
            matrix = stored[[row[cid] for cid in ids]]
        else:
            matrix = np.zeros((0, dim), dtype=np.float32)
        # vars() copies, not dataclasses.asdict(): asdict deep-copies and took 0.9 s at 10,000 chunks.
        return Snapshot(
            stamp=stamp,
            documents={src: dict(vars(rec)) for src, rec in self.documents.items()},
            chunks=[dict(vars(self.chunks[cid])) for cid in ids],
            vectors=matrix,
            next_id=self.next_id,
        )

    @classmethod
    def restore(cls, snap: Snapshot, device: str = "cpu") -> "IndexState":
        state = cls(device)
        state.next_id = snap.next_id
        state.documents = {src: DocRecord(**rec) for src, rec in snap.documents.items()}
        if snap.chunks:
            state.vectors = VectorIndex(int(snap.vectors.shape[1]), device)
            ids = np.array([c["id"] for c in snap.chunks], dtype=np.int64)
            state.vectors.add(ids, snap.vectors)
            for raw in snap.chunks:
                state._add_chunk(ChunkRecord(**raw))
        for src, rec in state.documents.items():
            if not rec.error:
                state.vocab.set_document(src, rec.terms)
        state.refresh()
        return state
