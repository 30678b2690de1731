"""Vectors embedded for chunks not yet in the saved index: the checkpoint of a large file.

A file is merged into the index only once all its chunks are embedded, which for a large one
takes minutes on 2 cores. Stopped before that (a restart, a logout, a crash), the work on it
would be lost and the next start would embed it from its start. So, while embedding, the
vectors computed so far are written beside the index (``pending.npz``, every
``SAVE_EVERY_S``, and when indexing stops); the next run reuses any whose chunk text (its
digest) comes up again, and entries leave the file once the index that holds them is saved.

Like the sentence-vector cache, this is only a cache: a file from other settings, or one that
cannot be read, is ignored, and the vectors are embedded again.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from daemon.kb.vector_file import read_vectors, write_vectors

_LOGGER = logging.getLogger(__name__)

FILE_NAME = "pending.npz"
SAVE_EVERY_S = 10.0          # while a file is embedded, its progress is written this often


class PendingVectors:
    """Chunk digest -> vector for what is embedded but not saved in the index yet."""

    def __init__(self, folder: Path, stamp: str, *, persist: bool = True) -> None:
        self._path = folder / FILE_NAME
        self._stamp = stamp          # embedding model and chunking: vectors of other settings are no use
        self._persist = persist
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        self._saved_at = time.monotonic()

    def get(self, digest: str) -> np.ndarray | None:
        with self._lock:
            return self._vectors.get(digest)

    def add(self, digests: Iterable[str], rows: Iterable[np.ndarray]) -> None:
        with self._lock:
            for digest, row in zip(digests, rows):
                self._vectors[digest] = np.asarray(row, dtype=np.float32)
                self._dirty = True

    def save_if_due(self) -> None:
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def clear(self) -> None:
        """Forget every vector (a rebuild embeds from scratch)."""
        self.settle(lambda _digest: True)

    def settle(self, saved: Callable[[str], bool]) -> None:
        """The index was saved: forget the vectors it now holds (``saved(digest)``) and
        write what is left, or remove the file when nothing is."""
        with self._lock:
            kept = {d: v for d, v in self._vectors.items() if not saved(d)}
            self._dirty |= len(kept) != len(self._vectors)
            self._vectors = kept
        self.save()

    # ------------------------------------------------------------------ disk
    def load(self) -> None:
        """Read the file if there is a usable one; anything else starts empty."""
        found = read_vectors(self._path, "stamp", self._stamp)
        if found is None:
            return
        with self._lock:
            self._vectors = found[0]
            self._dirty = False
        if self._vectors:
            _LOGGER.info("knowledge base: %d chunk vectors kept from an interrupted indexing", len(self._vectors))

    def save(self) -> None:
        """Write the vectors (atomically) if they changed; remove the file when there are none."""
        self._saved_at = time.monotonic()
        if not self._persist:
            return
        with self._lock:
            if not self._dirty:
                return
            vectors = dict(self._vectors)
            self._dirty = False
        try:
            if vectors:
                write_vectors(self._path, vectors, "U64", stamp=np.array(self._stamp))
            else:
                self._path.unlink(missing_ok=True)
        except OSError as exc:      # a cache: a restart only embeds more without it
            _LOGGER.debug("knowledge base: cannot write %s: %s", self._path, exc)
