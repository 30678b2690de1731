"""Vectors of the clauses sentence selection scores, computed when documents are indexed.

Choosing the clause that answers a question embeds every clause of the retrieved passages:
about 70 ms for eight clauses on one core, on the path to the first word of the answer.
The clauses only change when documents do, so their vectors are computed at indexing time,
kept in memory and on disk beside the index (``clauses.npz``), and only looked up per
question. A clause missing from the cache (a document indexed moments ago) is embedded then.

The file is a cache: keys are digests of the embedding model and the text, so a stale or
unreadable file costs a recomputation, never a wrong vector.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from daemon.kb.vector_file import read_vectors, write_vectors

_LOGGER = logging.getLogger(__name__)

FILE_NAME = "clauses.npz"
KEEP_STALE = 2000            # vectors of clauses no document holds now, kept for a return
Embed = Callable[[list[str]], np.ndarray]


class ClauseVectors:
    """Clause text -> vector, filled in bulk at indexing time and persisted in ``folder``."""

    def __init__(self, folder: Path, model_id: str) -> None:
        self._path = folder / FILE_NAME
        self._model = model_id
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}
        self._covered: frozenset[str] = frozenset()    # chunk digests whose clauses are in
        self._dirty = False

    def __len__(self) -> int:
        return len(self._vectors)

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self._model}\0{text}".encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ lookups
    def lookup(self, texts: list[str], embed: Embed) -> np.ndarray:
        """One vector per text: from the cache, the rest embedded now (and kept)."""
        keys = [self._key(t) for t in texts]
        with self._lock:
            found = [self._vectors.get(k) for k in keys]
        missing = [i for i, v in enumerate(found) if v is None]
        if missing:
            fresh = np.asarray(embed([texts[i] for i in missing]), dtype=np.float32)
            with self._lock:
                for i, row in zip(missing, fresh):
                    found[i] = self._vectors[keys[i]] = row
        return np.stack([np.asarray(v, dtype=np.float32) for v in found]) if found else np.zeros((0, 0))

    # ------------------------------------------------------------------ filling
    def needs_refresh(self, chunk_digests: Iterable[str]) -> bool:
        return frozenset(chunk_digests) != self._covered

    def refresh(self, clauses_by_chunk: dict[str, list[str]], embed: Embed, batch: int = 0) -> int:
        """Hold exactly the clauses of these chunks (digest -> clause texts); embeds the new
        ones with ``embed``, ``batch`` at a time (0: all at once), and returns how many that was.

        When ``embed`` raises (it is asked to stop), the vectors computed so far are kept and
        the exception goes on; a later refresh computes only the rest."""
        wanted = {self._key(t): t for texts in clauses_by_chunk.values() for t in texts}
        with self._lock:
            missing = [k for k in wanted if k not in self._vectors]
        step = batch if batch > 0 else max(1, len(missing))
        done: list[str] = []
        rows: list[np.ndarray] = []
        try:
            for start in range(0, len(missing), step):
                keys = missing[start:start + step]
                rows.extend(np.asarray(embed([wanted[k] for k in keys]), dtype=np.float32))
                done.extend(keys)
        except BaseException:
            with self._lock:
                self._vectors = {**self._vectors, **dict(zip(done, rows))}
                self._dirty |= bool(done)
            raise
        with self._lock:
            kept = self._vectors
            stale = len(kept) - sum(1 for k in wanted if k in kept)
            # Clauses of removed documents are kept a while: a file moved out of the folder
            # and back, or deleted and restored, needs no embedding again.
            if stale > max(len(wanted), KEEP_STALE):
                kept = {k: v for k, v in kept.items() if k in wanted}
            else:
                kept = dict(kept)
            kept.update(zip(done, rows))
            self._dirty |= len(kept) != len(self._vectors) or bool(done)
            self._vectors = kept
            covered = frozenset(clauses_by_chunk)
            self._dirty |= covered != self._covered
            self._covered = covered
        return len(missing)

    # ------------------------------------------------------------------ disk
    def load(self) -> None:
        """Read the file if there is a usable one; anything else starts empty."""
        found = read_vectors(self._path, "model", self._model, "covered")
        if found is None:
            return
        vectors, (covered,) = found
        with self._lock:
            self._vectors = vectors
            self._covered = frozenset(str(c) for c in covered)
            self._dirty = False

    def save(self) -> None:
        """Write the cache (atomically) if it changed since it was read or written."""
        with self._lock:
            if not self._dirty:
                return
            vectors = dict(self._vectors)
            covered = sorted(self._covered)
            self._dirty = False
        try:
            write_vectors(self._path, vectors, "U40", model=np.array(self._model),
                          covered=np.array(covered, dtype=str))
        except OSError as exc:      # a cache: the answers only get slower without it
            _LOGGER.warning("knowledge base: cannot write %s: %s", self._path, exc)
