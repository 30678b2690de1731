"""The dense side: a FAISS inner-product index over normalised embeddings, keyed by chunk id.

The CPU ``IndexIDMap2`` is the source of truth (it supports removal by id). With
``rag.device: cuda`` searches run on a GPU copy made with ``faiss.index_cpu_to_all_gpus``,
refreshed after the CPU index changes (GPU flat indexes cannot remove ids in place).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from daemon.errors import KnowledgeBaseError

_LOGGER = logging.getLogger(__name__)


class VectorIndex:
    """Exact cosine search (vectors are L2-normalised, so inner product = cosine)."""

    def __init__(self, dim: int, device: str = "cpu") -> None:
        import faiss

        self._faiss = faiss
        # One query against ~10,000 vectors takes about a millisecond on one core; OpenMP's
        # spinning threads only add delay when the other stages keep the cores busy.
        faiss.omp_set_num_threads(1)
        self.dim = dim
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._device = device
        self._gpu: Any = None
        self._gpu_ids: np.ndarray | None = None
        if device == "cuda":
            gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
            if gpus < 1 or not hasattr(faiss, "index_cpu_to_all_gpus"):
                raise KnowledgeBaseError(
                    "rag.device is cuda but this faiss has no GPU support (or sees no GPU); "
                    "install the gpu extra (faiss-gpu instead of faiss-cpu) or set rag.device: cpu"
                )

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got shape {vectors.shape}")
        self._cpu.add_with_ids(normalize(vectors), np.asarray(ids, dtype=np.int64))
        self._gpu = None

    def remove(self, ids: list[int]) -> None:
        if ids:
            self._cpu.remove_ids(np.asarray(ids, dtype=np.int64))
            self._gpu = None

    def vector(self, chunk_id: int) -> np.ndarray:
        return self._cpu.reconstruct(int(chunk_id))

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything stored, in storage order."""
        n = len(self)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        ids = self._faiss.vector_to_array(self._cpu.id_map).astype(np.int64)
        return ids, self._cpu.index.reconstruct_n(0, n)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Best ``k`` (chunk id, cosine) pairs for one query vector."""
        n = len(self)
        if n == 0 or k <= 0:
            return []
        q = normalize(np.asarray(query, dtype=np.float32).reshape(1, -1))
        k = min(k, n)
        if self._device == "cuda":
            return self._search_gpu(q, k)
        scores, ids = self._cpu.search(q, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _search_gpu(self, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self._gpu is None:
            ids, vectors = self.all()
            flat = self._faiss.IndexFlatIP(self.dim)
            flat.add(vectors)
            self._gpu = self._faiss.index_cpu_to_all_gpus(flat)
            self._gpu_ids = ids
        scores, rows = self._gpu.search(q, k)
        assert self._gpu_ids is not None
        return [(int(self._gpu_ids[r]), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]

    def similarity(self, query: np.ndarray, chunk_ids: list[int]) -> dict[int, float]:
        """Cosine between the query and specific chunks (keyword hits outside the dense top-k)."""
        if not chunk_ids:
            return {}
        q = normalize(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
        mat = np.stack([self._cpu.reconstruct(int(i)) for i in chunk_ids])
        return dict(zip(chunk_ids, (mat @ q).tolist()))


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)
