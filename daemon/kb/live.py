"""Applying filesystem changes (from the watcher or a caller) to the knowledge base.

A mixin of :class:`daemon.kb.index.KnowledgeBase`, beside :mod:`daemon.kb.indexing` (bringing
the index in line with the folder) and :mod:`daemon.kb.queries` (searching it): this one reads
as "a file appeared, changed, moved or went away".
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from daemon.kb.cancel import Interrupted
from daemon.kb.files import BAD_NAME, _reason, has_bad_name, is_candidate, log_name, printable, stat_document

_LOGGER = logging.getLogger(__name__)

if TYPE_CHECKING:
    from daemon.kb.state import IndexState


class LiveChanges:
    """Create/modify/delete/move handling; expects the attributes KnowledgeBase defines."""

    folder: Path
    _lock: threading.RLock
    _write_lock: threading.RLock
    _state: "IndexState"
    _opened: bool
    _problems: dict[str, str]
    _defer_saves: bool
    _unsaved: bool
    _folder_reason: str

    if TYPE_CHECKING:
        def _load_persisted(self) -> None: ...
        def _sync_folder(self, progress: Any, force_save: bool = False) -> None: ...
        def _index_items(self, items: list[tuple[str, os.stat_result]], progress: Any) -> bool: ...
        def _finish_batch(self) -> None: ...

    def sync_path(self, path: Path) -> None:
        """Index a created or modified file (or forget it if it is gone)."""
        self.apply_changes([], [Path(path)])

    def remove_path(self, path: Path) -> None:
        """Forget a file, or everything under a folder."""
        with self._write_lock:
            rel = self._relative(Path(path))
            if rel is not None and self._remove_under(rel):
                self._finish_batch()

    def move_path(self, src: Path, dst: Path) -> None:
        """A rename: chunks keep their vectors under the new name (nothing is re-embedded)."""
        self.apply_changes([(Path(src), Path(dst))], [Path(dst)])

    def apply_changes(self, moves: list[tuple[Path, Path]], paths: Iterable[Path], rescan: bool = False,
                      save: bool = True) -> bool:
        """One batch of filesystem changes as one commit; True if anything changed.

        With ``save=False`` the batch is searchable at once but written to disk only by the
        next :meth:`flush` (the watcher's, once the folder is quiet: writing 10,000 chunks takes
        a while on a busy machine, and the next change would wait for it).
        """
        with self._write_lock:
            self._defer_saves = not save
            try:
                return self._apply(moves, paths, rescan)
            except Interrupted:    # stop(): the batch in progress is dropped, what it committed is kept
                _LOGGER.info("knowledge base: stopped while applying folder changes")
                self._unsaved = True
                return False
            finally:
                self._defer_saves = False

    def _apply(self, moves: list[tuple[Path, Path]], paths: Iterable[Path], rescan: bool) -> bool:
        with self._write_lock:
            if not self._opened:
                self._load_persisted()
                self._opened = True
            before = self._fingerprint()
            if rescan or not self.folder.is_dir():
                self._sync_folder(None)
                return self._fingerprint() != before
            changed = False
            for src, dst in moves:
                changed |= self._move(src, dst)
            items = self._stat_paths(paths)
            changed |= self._index_items(items, None)
            changed |= self._fingerprint() != before
            if changed:
                self._finish_batch()
            return changed

    # ------------------------------------------------------------------ helpers
    def _stat_paths(self, paths: Iterable[Path]) -> list[tuple[str, os.stat_result]]:
        items = []
        for path in dict.fromkeys(paths):
            rel = self._relative(path)
            if rel is None or not is_candidate(rel):
                continue
            if has_bad_name(rel):
                if os.path.lexists(path):
                    self._note_problem(printable(rel), BAD_NAME)
                else:
                    with self._lock:
                        self._problems.pop(printable(rel), None)
                continue
            if not os.path.lexists(path):
                self._remove_under(rel)
                continue
            try:
                st = stat_document(path)
            except OSError as exc:
                self._remove_under(rel)
                self._note_problem(rel, _reason(exc))
                continue
            with self._lock:
                self._problems.pop(rel, None)
            with self._lock:
                old = self._state.documents.get(rel)
            if old is None or not old.same_file(st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                items.append((rel, st))
        return items

    def _move(self, src: Path, dst: Path) -> bool:
        old, new = self._relative(src), self._relative(dst)
        if old is None:
            return False
        with self._lock:
            sources = [s for s in self._state.documents if s == old or s.startswith(old + "/")]
            for source in sources:
                target = (new + source[len(old):]) if new is not None else None
                record = self._state.documents[source]
                if target is None or not is_candidate(target) or has_bad_name(target) or record.named_by_file:
                    self._state.remove_document(source)
                    _LOGGER.info("knowledge base: removed %s", log_name(source))
                else:
                    self._state.rename_document(source, target)
                    _LOGGER.info("knowledge base: %s is now %s", log_name(source), log_name(target))
            if sources:
                self._state.refresh()
        return bool(sources)

    def _remove_under(self, rel: str) -> bool:
        with self._lock:
            sources = [s for s in self._state.documents if s == rel or s.startswith(rel + "/")]
            for source in sources:
                self._state.remove_document(source)
                _LOGGER.info("knowledge base: removed %s", log_name(source))
            if sources:
                self._state.refresh()
            for key in [k for k in self._problems if k == rel or k.startswith(rel + "/")]:
                del self._problems[key]
        return bool(sources)

    def _note_problem(self, rel: str, reason: str) -> None:
        """A path that cannot be indexed (kept in status()); logged like any skipped file."""
        with self._lock:
            before = self._problems.get(rel)
            self._problems[rel] = reason
        if before != reason:
            _LOGGER.warning("knowledge base: skipping %s: %s", log_name(rel), reason)

    def _replace_problems(self, problems: dict[str, str]) -> None:
        """The problems found by a full scan of the folder; the new ones are logged."""
        with self._lock:
            before, self._problems = self._problems, dict(problems)
        for rel, reason in problems.items():
            if before.get(rel) != reason:
                _LOGGER.warning("knowledge base: skipping %s: %s", log_name(rel), reason)

    def _relative(self, path: Path) -> str | None:
        try:
            rel = os.path.relpath(os.path.abspath(path), self.folder)
        except ValueError:
            return None
        return None if rel == "." or rel.startswith("..") else rel

    def _fingerprint(self) -> tuple[int, int, int, str, frozenset[tuple[str, str]]]:
        # The folder's own state and the failed files count too: status() (the KnowledgeBase
        # property) lists them, so a folder going and coming back, or a file newly skipped
        # (a symlink loop, say), is an update to announce even when no chunk changed.
        with self._lock:
            failed = {(src, rec.error) for src, rec in self._state.documents.items() if rec.error}
            failed.update(self._problems.items())
            return (len(self._state.documents), len(self._state.chunks), self._state.next_id,
                    self._folder_reason, frozenset(failed))
