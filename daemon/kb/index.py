"""The live knowledge base: documents in a folder, searchable by meaning and by keyword.

:class:`KnowledgeBase` holds the state and its locks, and runs the lifecycle (open, rebuild,
watch, stop) and :meth:`~KnowledgeBase.status`; its mixins do the rest: indexing
(:mod:`daemon.kb.indexing`), questions (:mod:`daemon.kb.queries`) and live folder changes
(:mod:`daemon.kb.live`).

Writers (start-up sync, the folder watcher, rebuild) take ``_write_lock`` one at a time and do
their slow work (reading, parsing, chunking, counting terms, embedding) without blocking
searches; only the short merge of a finished batch takes ``_lock``, which searches hold too.
The embedding model is shared through an :class:`EmbedGate`: indexing embeds ``EMBED_BATCH``
chunks per turn and a question goes next, so it waits for one batch at most.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from daemon.config import RagConfig
from daemon.errors import KnowledgeBaseError
from daemon.kb.cancel import Interrupted
from daemon.kb.chunking import Chunker
from daemon.kb.clause_vectors import ClauseVectors
from daemon.kb.embed_gate import EmbedGate
from daemon.kb.embedder import load_embedder, model_dir
from daemon.kb.files import _reason
from daemon.kb.indexer import FileIndexer
from daemon.kb.indexing import Indexing, Progress
from daemon.kb.live import LiveChanges
from daemon.kb.pending_vectors import PendingVectors
from daemon.kb.progress import IndexingProgress
from daemon.kb.queries import Queries
from daemon.kb.state import IndexState
from daemon.kb.store import FORMAT_VERSION, IndexMismatch, IndexStore
from daemon.kb.vocab import load_common_words

_LOGGER = logging.getLogger(__name__)

STOP_WAIT_S = 0.5            # stop() waits this long for the batch in progress, then leaves it
STATUS_WAIT_S = 0.05         # status() (read on the event loop) waits no longer for a merge

__all__ = ["KnowledgeBase", "Progress"]


class KnowledgeBase(Indexing, Queries, LiveChanges):
    """A folder of documents indexed with llama-index + FAISS + BM25, kept live."""

    def __init__(self, cfg: RagConfig, *, embedder: Any | None = None, persist: bool = True) -> None:
        """``persist=False``: read the saved index but never write it (another process, the
        service, owns it); what the folder has that the index lacks is embedded in memory."""
        self.cfg = cfg
        self.persist = persist
        self.folder = Path(cfg.knowledge_base).expanduser().absolute()
        key = hashlib.sha1(os.fsencode(self.folder)).hexdigest()[:10]
        self.index_dir = Path(cfg.index_dir).expanduser().absolute() / f"{self.folder.name or 'kb'}-{key}"
        self._embedder = embedder
        self._model_id = str(getattr(embedder, "model_id", "") or cfg.embedding_model)
        self._gate = EmbedGate()
        self._stopping = threading.Event()
        self._progress = IndexingProgress()
        self._lock = threading.RLock()
        self._write_lock = threading.RLock()
        self._state = IndexState(cfg.device)
        self._store = IndexStore(self.index_dir)
        self._indexer: FileIndexer | None = None
        self._opened = False
        self._last_indexed = 0.0
        self._last_saved = 0.0
        self._save_error = ""
        self._defer_saves = False     # True while the watcher applies a batch: save after notifying
        self._unsaved = False
        self._clauses_pending = False  # a sentence-vector refresh was interrupted: finish it later
        self._problems: dict[str, str] = {}
        self._summary: tuple[int, int, dict[str, str]] = (0, 0, {})   # status() during a merge
        self._folder_reason = ""
        self._query_cache: tuple[str, np.ndarray] | None = None
        self._clauses = ClauseVectors(self.index_dir, self._model_id)
        self._pending = PendingVectors(self.index_dir, json.dumps(self._stamp(), sort_keys=True),
                                       persist=persist)
        self._watcher: Any = None

    # ------------------------------------------------------------------ lifecycle
    def check_folder(self) -> None:
        """Raise :class:`KnowledgeBaseError` when the folder is missing or unreadable."""
        if not self.folder.exists():
            raise KnowledgeBaseError(f"knowledge-base folder {self.folder} does not exist; create it or "
                                     "set rag.knowledge_base (or --kb DIR) to a folder of documents")
        if not self.folder.is_dir():
            raise KnowledgeBaseError(f"knowledge base {self.folder} is not a folder; point rag.knowledge_base at one")
        try:
            os.listdir(self.folder)
        except OSError as exc:
            raise KnowledgeBaseError(f"knowledge-base folder {self.folder}: {_reason(exc)}") from None

    def open(self, progress: Progress | None = None) -> None:
        """Load the persisted index, then bring it in line with the folder."""
        self._stopping.clear()
        with self._write_lock:
            if not self._opened:
                self._load_persisted()
                self._pending.load()
                self._opened = True
            try:
                self._sync_folder(progress)
            except Interrupted:
                _LOGGER.info("knowledge base: stopped while indexing the folder")
                return
            if self._folder_reason:
                # The service goes on without documents and the watcher picks the folder up
                # when it appears; say so now, not only in status().
                _LOGGER.warning("knowledge base: %s; answering without it until it appears "
                                "(set rag.knowledge_base or --kb to use another folder)", self._folder_reason)
            if self._clauses.needs_refresh(self._chunk_digests()):
                self._save_clauses()            # an index saved before sentence vectors were kept

    def warm_up(self) -> None:
        """Load the embedding model now (about 10 s on 2 cores) rather than at the first question."""
        self._query_vector("warm up")

    def rebuild(self, progress: Progress | None = None) -> None:
        """Forget the index and embed every document again."""
        self._stopping.clear()
        with self._write_lock:
            with self._lock:
                self._state = IndexState(self.cfg.device)
            self._pending.clear()
            self._opened = True
            try:
                self._sync_folder(progress, force_save=True)
            except Interrupted:
                _LOGGER.info("knowledge base: stopped while rebuilding the index")

    def start_watching(self, on_update: Callable[[int, int], None] | None = None,
                       on_progress: Callable[[], None] | None = None) -> None:
        """Follow the folder live; ``on_update(documents, chunks)`` runs on the watcher's thread
        after each batch of changes, ``on_progress()`` on the indexing thread when the
        ``indexing`` line of :meth:`status` may have moved (at most about once a second)."""
        from daemon.kb.watcher import FolderWatcher

        self._stopping.clear()
        self.follow_progress(on_progress)
        if not self._opened:
            self.open()
        if self._watcher is None:
            self._watcher = FolderWatcher(self, self.cfg.debounce_ms / 1000.0, on_update)
            self._watcher.start()

    def follow_progress(self, on_progress: Callable[[], None] | None) -> None:
        """``on_progress()`` on the indexing thread whenever the ``indexing`` line of
        :meth:`status` may have moved (at most about once a second), e.g. during :meth:`open`."""
        self._progress.listen(on_progress)

    def stop(self) -> None:
        """Stop watching and indexing, within about ``STOP_WAIT_S`` even in the middle of a
        batch: the work in progress gives up at its next step (a torch call cannot be
        interrupted; the watcher's thread is a daemon and does not keep the process alive).
        Pending changes are dropped; what is committed is saved when the writer lets go in
        time, and the index on disk is always a consistent one. ``open()``, ``rebuild()`` or
        ``start_watching()`` start again."""
        self._stopping.set()
        self._progress.listen(None)
        deadline = time.monotonic() + STOP_WAIT_S
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop(timeout=STOP_WAIT_S)
        self._pending.save()        # what a file in the middle of embedding has so far
        if not self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _LOGGER.info("knowledge base: stopped in the middle of a batch; it is dropped (the index "
                         "on disk is the last one saved; the batches before it are kept for the next start)")
            return
        try:
            if self._unsaved:
                self._save()
        finally:
            self._write_lock.release()

    def status(self) -> dict[str, Any]:
        """documents, chunks, last_indexed (unix time), failed {file: reason}, folder, index_dir,
        watching, reason (why the folder is unusable), save_error (why the index could not be
        written to index_dir the last time; "" when it was) and indexing ("" when idle, else e.g.
        "file 1 of 3: big.txt, 3200 of 24310 chunks embedded")."""
        # The D-Bus property is read on the event loop: during the merge of a large file it
        # gets the figures from just before rather than wait.
        if self._lock.acquire(timeout=STATUS_WAIT_S):
            try:
                documents, chunks = self._state.counts()
                failed = {src: rec.error for src, rec in self._state.documents.items() if rec.error}
                failed.update(self._problems)
                self._summary = (documents, chunks, dict(failed))
            finally:
                self._lock.release()
        else:
            documents, chunks, failed = self._summary[0], self._summary[1], dict(self._summary[2])
        if self._folder_reason:
            failed["."] = self._folder_reason
        return {
            "documents": documents,
            "chunks": chunks,
            "last_indexed": self._last_indexed,
            "failed": dict(sorted(failed.items())),
            "folder": str(self.folder),
            "index_dir": str(self.index_dir),
            "watching": self._watcher is not None,
            "reason": self._folder_reason,
            "indexing": self._progress.describe(),
            "save_error": self._save_error,
        }

    # ------------------------------------------------------------------ internals
    def _stamp(self) -> dict[str, Any]:
        return {"model": self._model_id, "chunk_size": self.cfg.chunk_size,
                "chunk_overlap": self.cfg.chunk_overlap, "format": FORMAT_VERSION}

    def _load_persisted(self) -> None:
        try:
            snap = self._store.load(self._stamp())
        except FileNotFoundError:
            return
        except IndexMismatch as exc:
            _LOGGER.warning("knowledge base: index in %s is unusable (%s); %s", self.index_dir, exc,
                            "rebuilding it" if self.persist else "embedding the folder in memory")
            return
        except OSError as exc:
            _LOGGER.warning("knowledge base: cannot read the index in %s (%s); indexing the folder again",
                            self.index_dir, exc)
            return
        state = IndexState.restore(snap, self.cfg.device)
        with self._lock:
            self._state = state
        self._clauses.load()
        self._last_indexed = self._last_saved = snap.saved_at
        _LOGGER.info("knowledge base: loaded %d chunks from %s", len(state.chunks), self.index_dir)

    def _file_indexer(self) -> FileIndexer:
        if self._indexer is None:
            where = model_dir(self.cfg)
            tokenizer = where / "tokenizer.json" if where else None
            common = load_common_words(where / "vocab.txt" if where else None)
            chunker = Chunker(self.cfg.chunk_size, self.cfg.chunk_overlap, tokenizer)
            self._indexer = FileIndexer(self.folder, chunker, int(self.cfg.max_file_mb * 1e6), common)
        return self._indexer

    # ------------------------------------------------------------------ embedding
    def _get_embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = load_embedder(self.cfg)
        return self._embedder
