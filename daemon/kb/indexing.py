"""Bringing the knowledge base in line with its folder: prepare, embed, commit and save.

A mixin of :class:`daemon.kb.index.KnowledgeBase` (one file's reading, parsing and chunking
is :class:`daemon.kb.indexer.FileIndexer`'s). Files are prepared one by one and committed in
batches of about ``COMMIT_CHUNKS`` chunks, embedded ``EMBED_BATCH`` at a time through the
shared :class:`EmbedGate`.

Between two steps (a piece of text, a batch of chunks) indexing checks whether to go on:
:meth:`stop` makes it give up (see :mod:`daemon.kb.cancel`), and a file that changed or
vanished on disk meanwhile is dropped and indexed again as it is now (or forgotten). The
index only ever holds whole files.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from daemon.kb.cancel import FileChanged, IndexingStopped, Interrupted, Superseded, same_on_disk
from daemon.kb.clause_vectors import ClauseVectors
from daemon.kb.embed_gate import EmbedGate
from daemon.kb.embedder import EMBED_BATCH
from daemon.kb.files import log_name, scan_folder
from daemon.kb.indexer import Check, FileIndexer, Prepared
from daemon.kb.pending_vectors import PendingVectors
from daemon.kb.progress import IndexingProgress
from daemon.kb.select import clause_contexts
from daemon.kb.store import IndexStore

_LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from daemon.kb.state import IndexState

Progress = Callable[[int, int, str], None]
COMMIT_CHUNKS = 256          # embed and commit in batches of about this many chunks
SAVE_EVERY_S = 30.0          # during a long build, persist progress this often
MAX_RETRIES = 2              # a file that changed while indexed is started again this often


class Indexing:
    """Sync, commit, save; expects the attributes KnowledgeBase defines."""

    folder: Path
    index_dir: Path
    persist: bool
    _lock: threading.RLock
    _write_lock: threading.RLock
    _state: "IndexState"
    _store: IndexStore
    _gate: EmbedGate
    _stopping: threading.Event
    _progress: IndexingProgress
    _pending: PendingVectors
    _clauses: ClauseVectors
    _watcher: Any
    _last_indexed: float
    _last_saved: float
    _save_error: str
    _defer_saves: bool
    _unsaved: bool
    _clauses_pending: bool
    _problems: dict[str, str]
    _folder_reason: str

    if TYPE_CHECKING:
        def _stamp(self) -> dict[str, Any]: ...
        def _file_indexer(self) -> FileIndexer: ...
        def _get_embedder(self) -> Any: ...
        def _stat_paths(self, paths: Iterable[Path]) -> list[tuple[str, os.stat_result]]: ...
        def _remove_under(self, rel: str) -> bool: ...
        def _replace_problems(self, problems: dict[str, str]) -> None: ...

    def flush(self) -> None:
        """Write pending changes to disk and compute the new sentences' vectors (the watcher
        does this once the folder is quiet), or finish vectors that newer changes interrupted."""
        with self._write_lock:
            if self._unsaved:
                self._save()
            elif self._clauses_pending:
                self._save_clauses()

    # ------------------------------------------------------------------ syncing
    def _sync_folder(self, progress: Progress | None, force_save: bool = False) -> None:
        if not self.folder.is_dir():
            self._folder_reason = (f"{self.folder} is not a folder" if self.folder.exists()
                                   else f"folder {self.folder} is missing")
            with self._lock:
                for source in list(self._state.documents):
                    self._state.remove_document(source)
                self._state.refresh()
                self._problems = {}
            return   # the last index stays on disk for when the folder comes back
        self._folder_reason = ""
        scan = scan_folder(self.folder, skip=self.index_dir)
        self._replace_problems(scan.problems)
        with self._lock:
            known = dict(self._state.documents)
        changed = False
        for source in known:
            if source not in scan.files:
                changed |= self._remove_under(source)
        items = [(src, st) for src, st in scan.files.items()
                 if src not in known or not known[src].same_file(st.st_size, st.st_mtime_ns, st.st_ctime_ns)]
        changed |= self._index_items(items, progress)
        if changed or force_save or not self._store.exists():
            self._finish_batch()

    def _index_items(self, items: list[tuple[str, os.stat_result]], progress: Progress | None) -> bool:
        """Prepare, embed and commit files in batches; True if the index changed.

        Raises :class:`Interrupted` when stopped; everything committed before stays."""
        indexer = self._file_indexer()
        queue = deque(items)
        retries: dict[str, int] = {}
        batch: list[Prepared] = []
        pending = 0
        changed = False
        done, total = 0, len(items)
        self._progress.begin(total)
        try:
            while queue or batch:
                if queue:
                    source, st = queue.popleft()
                    if progress:
                        progress(done, total, source)
                    done += 1
                    self._check_stop()
                    with self._lock:
                        old = self._state.documents.get(source)
                    self._progress.preparing(source)
                    try:
                        prepared = indexer.prepare(source, st, old, self._file_check(source, st))
                    except FileChanged:
                        total += self._index_again([source], queue, retries)
                        continue
                    batch.append(prepared)
                    pending += len(prepared.drafts or ())
                    if pending < COMMIT_CHUNKS and queue:
                        continue
                if batch:
                    changed |= self._commit_batch(batch, queue, retries)
                batch, pending = [], 0
                total = done + len(queue)
                if queue and time.time() - self._last_saved > SAVE_EVERY_S:
                    self._save()
        finally:
            self._progress.end()
        if progress and items:
            progress(total, total, "")
        return changed

    def _commit_batch(self, batch: list[Prepared], queue: deque[tuple[str, os.stat_result]],
                      retries: dict[str, int]) -> bool:
        changed, dropped = self._commit(batch)
        if dropped:
            self._index_again(sorted(dropped), queue, retries)
        return changed

    def _index_again(self, sources: list[str], queue: deque[tuple[str, os.stat_result]],
                     retries: dict[str, int]) -> int:
        """These files changed or vanished while they were indexed, and their work was
        dropped: queue them again as they are now (a few times), or forget them if gone.
        Returns how many were queued."""
        queued = 0
        for source in sources:
            retries[source] = retries.get(source, 0) + 1
            now = self._stat_paths([self.folder / source])    # forgets it if it is gone
            if not now:
                _LOGGER.info("knowledge base: %s went away while it was being indexed; dropped it", log_name(source))
            elif retries[source] > MAX_RETRIES:
                _LOGGER.warning("knowledge base: %s keeps changing; it is indexed once it settles", log_name(source))
            else:
                _LOGGER.info("knowledge base: %s changed while it was being indexed; starting it again", log_name(source))
                queue.extend(now)
                queued += len(now)
        self._progress.add_files(queued)
        return queued

    def _commit(self, batch: list[Prepared]) -> tuple[bool, set[str]]:
        """Embed the new chunks of ``batch`` and merge it into the index; (changed, the files
        dropped because they changed on disk meanwhile)."""
        vectors, dropped = self._vectors_for(batch)
        kept = [p for p in batch if p.source not in dropped]
        matrices: dict[str, np.ndarray] = {}
        for prepared in kept:
            drafts = prepared.drafts or []
            if not prepared.unchanged:
                rows = [vectors[(prepared.source, i)] for i in range(len(drafts))]
                matrices[prepared.source] = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        self._check_stop()
        with self._lock:
            for prepared in kept:
                if prepared.unchanged:
                    self._state.documents[prepared.source] = prepared.record
                    continue
                self._state.put_document(prepared.source, prepared.record, prepared.drafts or [],
                                         matrices[prepared.source], prepared.counted)
            self._state.refresh()
            self._last_indexed = time.time()
        for prepared in kept:
            if prepared.drafts and not prepared.unchanged:
                count = len(prepared.drafts)
                _LOGGER.info("knowledge base: indexed %s: %d chunk%s", log_name(prepared.source), count,
                             "" if count == 1 else "s")
        self._progress.files_done(len(batch))
        return any(not p.unchanged for p in kept), dropped

    def _vectors_for(self, batch: list[Prepared]) -> tuple[dict[tuple[str, int], np.ndarray], set[str]]:
        """A vector for every new chunk (reused when the same text was embedded before),
        embedded ``EMBED_BATCH`` at a time; and the files dropped on the way because they
        changed or vanished on disk (their remaining chunks are not embedded)."""
        out: dict[tuple[str, int], np.ndarray] = {}
        missing: dict[str, tuple[str, list[tuple[str, int]]]] = {}
        for prepared in batch:
            with self._lock:      # per file: a search waits for one file's lookups at most
                for i, draft in enumerate(prepared.drafts or []):
                    slot = (prepared.source, i)
                    if draft.digest in missing:
                        missing[draft.digest][1].append(slot)
                        continue
                    known = self._state.known_vector(draft.digest)
                    if known is None:        # embedded before a stop, not merged yet
                        known = self._pending.get(draft.digest)
                    if known is not None:
                        out[slot] = np.array(known, dtype=np.float32)
                    else:
                        missing[draft.digest] = (draft.embed_text, [slot])
        fresh = [p for p in batch if p.drafts and not p.unchanged]
        todo = [(digest, text, slots) for digest, (text, slots) in missing.items()]
        if todo:
            self._progress.embedding(list(dict.fromkeys(slots[0][0] for _, _, slots in todo)), len(todo))
        dropped: set[str] = set()
        pos = 0
        while pos < len(todo):
            self._check_stop()
            dropped |= self._changed_on_disk(fresh, dropped)
            take: list[tuple[str, str, list[tuple[str, int]]]] = []
            while pos < len(todo) and len(take) < EMBED_BATCH:
                digest, text, slots = todo[pos]
                pos += 1
                if any(source not in dropped for source, _ in slots):
                    take.append((digest, text, slots))
            if not take:
                break
            rows = self._embed_batch([text for _, text, _ in take])
            for (_, _, slots), row in zip(take, rows):
                for slot in slots:
                    out[slot] = row
            self._pending.add([digest for digest, _, _ in take], rows)
            self._pending.save_if_due()
            self._progress.embedded(len(take))
        dropped |= self._changed_on_disk(fresh, dropped)
        return out, dropped

    def _changed_on_disk(self, prepared: list[Prepared], skip: set[str]) -> set[str]:
        return {p.source for p in prepared if p.source not in skip and not same_on_disk(
            self.folder / p.source, p.record.size, p.record.mtime_ns, p.record.ctime_ns)}

    def _file_check(self, source: str, st: os.stat_result) -> Check:
        """Run between pieces of one file's preparation: stop, or drop it if it changed."""
        path = self.folder / source

        def check() -> None:
            self._check_stop()
            if not same_on_disk(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                raise FileChanged(source)
        return check

    def _check_stop(self) -> None:
        if self._stopping.is_set():
            raise IndexingStopped()

    def _check_cache_work(self) -> None:
        """Work that only fills a cache also yields to folder changes waiting to be applied."""
        self._check_stop()
        watcher = self._watcher
        if watcher is not None and watcher.pending():
            raise Superseded()

    def _finish_batch(self) -> None:
        self._last_indexed = time.time()
        if self._defer_saves:
            self._unsaved = True
        else:
            self._save()

    # ------------------------------------------------------------------ saving
    def _save(self) -> None:
        self._unsaved = False
        if not self.folder.is_dir() or not self.persist:
            return
        with self._lock:
            snap = self._state.snapshot(self._stamp())
        try:
            self._store.save(snap)
            self._last_saved = time.time()
        except OSError as exc:   # a full disk must not take the service down; the index stays in memory
            reason = exc.strerror or str(exc)
            log = _LOGGER.error if reason != self._save_error else _LOGGER.debug   # once, not per change
            self._save_error = reason
            log("knowledge base: cannot save the index to %s: %s; it is kept in memory, and what changed "
                "is embedded again at the next start (make the folder writable or set rag.index_dir)",
                self.index_dir, reason)
            return
        self._save_error = ""
        with self._lock:
            state = self._state
        self._pending.settle(state.holds)
        self._save_clauses()

    def _save_clauses(self) -> None:
        if not self.persist:     # a question embeds the clauses it lacks
            return
        try:
            self._refresh_clauses()
        except Interrupted:      # the rest at the next flush; a question embeds what it lacks
            self._clauses_pending = True
            return
        self._clauses_pending = False
        self._clauses.save()

    def _chunk_digests(self) -> list[str]:
        with self._lock:
            return [c.digest for c in self._state.chunks.values()]

    def _refresh_clauses(self) -> bool:
        """Compute the vectors of new clauses now, so questions only look them up."""
        with self._lock:
            chunks = [(c.digest, c.text, c.heading) for c in self._state.chunks.values()]
        if not self._clauses.needs_refresh(digest for digest, _, _ in chunks):
            return False
        by_chunk = {digest: [context for _, context in clause_contexts(text, heading)]
                    for digest, text, heading in chunks}
        # In batches: a question waits for one batch at most, and folder changes or a stop
        # interrupt the refresh between two (what was computed is kept).
        added = self._clauses.refresh(by_chunk, self._embed_cache_batch, EMBED_BATCH)
        if added:
            _LOGGER.info("knowledge base: %d sentence vectors computed", added)
        return True

    # ------------------------------------------------------------------ embedding
    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """At most ``EMBED_BATCH`` texts for indexing: one turn of the shared model."""
        with self._gate.batch():
            vectors = self._get_embedder().get_text_embedding_batch(texts)
        return np.asarray(vectors, dtype=np.float32)

    def _embed_cache_batch(self, texts: list[str]) -> np.ndarray:
        self._check_cache_work()
        return self._embed_batch(texts)
