"""The live knowledge base: documents in a folder, searchable by meaning and by keyword.

Writers (start-up sync, the folder watcher, rebuild) take ``_write_lock`` one at a time and do
their slow work (reading, parsing, chunking, counting terms, embedding) without blocking
searches; only the short merge of a finished batch takes ``_lock``, which searches hold too.
The embedding model is shared through an :class:`EmbedGate`: indexing embeds ``EMBED_BATCH``
chunks per turn and a question goes next, so it waits for one batch at most.

Between two steps (a piece of text, a batch of chunks) indexing checks whether to go on:
:meth:`stop` makes it give up (see :mod:`daemon.kb.cancel`), and a file that changed or
vanished on disk meanwhile is dropped and indexed again as it is now (or forgotten). The
index only ever holds whole files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np

from daemon.config import RagConfig
from daemon.errors import KnowledgeBaseError
from daemon.kb.cancel import FileChanged, IndexingStopped, Interrupted, Superseded, same_on_disk
from daemon.kb.chunking import Chunker
from daemon.kb.embed_gate import EmbedGate
from daemon.kb.embedder import EMBED_BATCH, load_embedder, model_dir, single_thread
from daemon.kb.files import _reason, log_name, scan_folder
from daemon.kb.hybrid import KEYWORD_WEIGHT, fuse
from daemon.kb.indexer import Check, FileIndexer, Prepared
from daemon.kb.live import LiveChanges
from daemon.kb.pending_vectors import PendingVectors
from daemon.kb.progress import IndexingProgress
from daemon.kb.clause_vectors import ClauseVectors
from daemon.kb.select import clause_contexts, select_sentences
from daemon.kb.state import IndexState
from daemon.kb.store import FORMAT_VERSION, IndexMismatch, IndexStore
from daemon.kb.textutil import raw_words, stem
from daemon.kb.vocab import load_common_words, names_outside, speech_terms, unknown_words
from daemon.messages import Passage

_LOGGER = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
COMMIT_CHUNKS = 256          # embed and commit in batches of about this many chunks
SAVE_EVERY_S = 30.0          # during a long build, persist progress this often
DENSE_CANDIDATES = 50
STOP_WAIT_S = 0.5            # stop() waits this long for the batch in progress, then leaves it
STATUS_WAIT_S = 0.05         # status() (read on the event loop) waits no longer for a merge
MAX_RETRIES = 2              # a file that changed while indexed is started again this often


class KnowledgeBase(LiveChanges):
    """A folder of documents indexed with llama-index + FAISS + BM25, kept live."""

    def __init__(self, cfg: RagConfig, *, embedder: Any | None = None, persist: bool = True) -> None:
        """``persist=False``: read the saved index but never write it (another process, the
        service, owns it); what the folder has that the index lacks is embedded in memory."""
        self.cfg = cfg
        self.persist = persist
        self.folder = Path(cfg.knowledge_base).expanduser().absolute()
        key = hashlib.sha1(str(self.folder).encode()).hexdigest()[:10]
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

    # ------------------------------------------------------------------ queries
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

    def status(self) -> dict[str, Any]:
        """documents, chunks, last_indexed (unix time), failed {file: reason}, folder, index_dir,
        watching, reason (why the folder is unusable) and indexing ("" when idle, else e.g.
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

    def flush(self) -> None:
        """Write pending changes to disk and compute the new sentences' vectors (the watcher
        does this once the folder is quiet), or finish vectors that newer changes interrupted."""
        with self._write_lock:
            if self._unsaved:
                self._save()
            elif self._clauses_pending:
                self._save_clauses()

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
    def _get_embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = load_embedder(self.cfg)
        return self._embedder

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """At most ``EMBED_BATCH`` texts for indexing: one turn of the shared model."""
        with self._gate.batch():
            vectors = self._get_embedder().get_text_embedding_batch(texts)
        return np.asarray(vectors, dtype=np.float32)

    def _embed_cache_batch(self, texts: list[str]) -> np.ndarray:
        self._check_cache_work()
        return self._embed_batch(texts)

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
