"""The ``.npz`` files of vector caches beside the index: read only when they were written with
the same settings (a stamp), written atomically. Both are caches: a file that cannot be read
or written costs a recomputation, never a wrong vector."""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

_LOGGER = logging.getLogger(__name__)


def read_vectors(path: Path, stamp_key: str, stamp: str, *extra: str) -> tuple[dict[str, np.ndarray], list[np.ndarray]] | None:
    """``key -> vector`` and the ``extra`` arrays of the file at ``path``; None when there is
    none, it holds another ``stamp`` under ``stamp_key``, or it cannot be read (logged)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data[stamp_key]) != stamp:
                return None
            keys, vectors = data["keys"], data["vectors"]
            more = [data[name] for name in extra]
    except FileNotFoundError:
        return None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        _LOGGER.warning("knowledge base: ignoring unreadable %s (%s)", path, exc)
        return None
    if len(keys) != len(vectors):
        return None
    return {str(k): np.asarray(v, dtype=np.float32) for k, v in zip(keys, vectors)}, more


def write_vectors(path: Path, vectors: dict[str, np.ndarray], key_dtype: str, **extra: np.ndarray) -> None:
    """Write ``vectors`` (and ``extra`` arrays) to ``path`` atomically. Raises OSError (the
    folder is read-only, or a file)."""
    keys = list(vectors)
    matrix = np.stack([vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(keys, dtype=key_dtype), vectors=matrix.astype(np.float32), **extra)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
