"""The index on disk: crash-safe generations behind one atomically replaced manifest.

Layout of ``index_dir``::

    manifest.json        {"format", "stamp", "generation", "files": {name: sha256}, ...}
    gen-<time>-<pid>/    records.json (documents + chunks) and vectors.npy (float32 rows)
    lock                 flock()ed while writing, so two processes never interleave

A save writes a new generation into a temporary folder, fsyncs every file and the folder,
renames it into place, then replaces ``manifest.json`` with ``os.replace`` (atomic on POSIX)
and only then deletes older generations. A kill at any instant leaves the manifest pointing
at a complete generation. Loading verifies the format, the stamp (model and chunking) and the
checksums; any mismatch is reported as :class:`IndexMismatch` so the caller rebuilds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

_LOGGER = logging.getLogger(__name__)

FORMAT_VERSION = 3
MANIFEST = "manifest.json"
RECORDS = "records.json"
VECTORS = "vectors.npy"


class IndexMismatch(Exception):
    """The stored index cannot be used (corrupt, other format, other model); rebuild it."""


@dataclass
class Snapshot:
    """Everything persisted: document records, chunk records and their vectors (same order)."""

    stamp: dict[str, Any]
    documents: dict[str, dict[str, Any]]
    chunks: list[dict[str, Any]]
    vectors: np.ndarray          # (len(chunks), dim) float32
    next_id: int
    saved_at: float = 0.0


class IndexStore:
    """Reads and writes :class:`Snapshot` objects under one folder."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        return (self.index_dir / MANIFEST).exists()

    def load(self, stamp: dict[str, Any]) -> Snapshot:
        """The last good snapshot; raises ``FileNotFoundError`` or :class:`IndexMismatch`."""
        if not self.exists():
            raise FileNotFoundError(self.index_dir / MANIFEST)
        with self._locked(shared=True):
            return self._load(stamp)

    def _load(self, stamp: dict[str, Any]) -> Snapshot:
        manifest_path = self.index_dir / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise IndexMismatch(f"unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
            raise IndexMismatch(f"index format {manifest.get('format') if isinstance(manifest, dict) else '?'}"
                                f" is not {FORMAT_VERSION}")
        if manifest.get("stamp") != stamp:
            raise IndexMismatch(f"index was built with {manifest.get('stamp')}, now {stamp}")
        gen = self.index_dir / str(manifest.get("generation", ""))
        try:
            for name, digest in dict(manifest["files"]).items():
                if _sha256(gen / name) != digest:
                    raise IndexMismatch(f"{gen.name}/{name} is damaged (checksum mismatch)")
            records = json.loads((gen / RECORDS).read_text(encoding="utf-8"))
            vectors = np.load(gen / VECTORS, allow_pickle=False)
        except IndexMismatch:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexMismatch(f"cannot read {gen.name} ({exc})") from None
        if vectors.ndim != 2 or len(vectors) != len(records["chunks"]):
            raise IndexMismatch("vectors and chunk records disagree")
        return Snapshot(stamp, records["documents"], records["chunks"], vectors.astype(np.float32, copy=False),
                        int(records["next_id"]), float(manifest.get("saved_at", 0.0)))

    # ------------------------------------------------------------------ writing
    def save(self, snap: Snapshot) -> None:
        """Write ``snap`` as a new generation and switch the manifest to it atomically."""
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            name = f"gen-{time.time_ns()}-{os.getpid()}"
            tmp = self.index_dir / f"tmp-{name}"
            tmp.mkdir()
            records = {"documents": snap.documents, "chunks": snap.chunks, "next_id": snap.next_id}
            _write_synced(tmp / RECORDS, json.dumps(records, ensure_ascii=False).encode("utf-8"))
            with open(tmp / VECTORS, "wb") as fh:
                np.save(fh, np.ascontiguousarray(snap.vectors, dtype=np.float32), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            os.rename(tmp, self.index_dir / name)
            manifest = {
                "format": FORMAT_VERSION,
                "stamp": snap.stamp,
                "generation": name,
                "files": {RECORDS: _sha256(self.index_dir / name / RECORDS),
                          VECTORS: _sha256(self.index_dir / name / VECTORS)},
                "saved_at": time.time(),
                "documents": len(snap.documents),
                "chunks": len(snap.chunks),
            }
            _write_synced(self.index_dir / f"{MANIFEST}.tmp", json.dumps(manifest, indent=1).encode("utf-8"))
            os.replace(self.index_dir / f"{MANIFEST}.tmp", self.index_dir / MANIFEST)
            _fsync_dir(self.index_dir)
            snap.saved_at = manifest["saved_at"]
            self._remove_stale(keep=name)

    def clear(self) -> None:
        """Forget the stored index (used before a full rebuild)."""
        with self._locked():
            (self.index_dir / MANIFEST).unlink(missing_ok=True)
            self._remove_stale(keep="")

    @contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.index_dir / "lock", "a+b")
        except OSError:
            if not shared:
                raise
            # A folder this process cannot write (owned by root after a `sudo`, a read-only
            # mount): reading without the lock is safe, a save replaces the manifest atomically
            # and the checksums catch a generation deleted under the reader.
            yield
            return
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _remove_stale(self, keep: str) -> None:
        # Under the lock no other writer is mid-save, so every other generation or temporary
        # folder is left over from an older save or a killed process.
        for entry in self.index_dir.iterdir():
            if entry.name != keep and entry.name.startswith(("gen-", "tmp-")) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
