"""Following the knowledge-base folder live with watchdog (inotify), debounced.

The observer thread only queues events. One worker thread ("kb-watch") waits until the folder
has been quiet for the debounce time, then hands the whole burst to the knowledge base as one
batch (one commit). The index is written to disk once the folder has been quiet for
``ROOT_CHECK_S`` (or every ``SAVE_WITHIN_S`` of changes that never stop), not after each batch:
writing a 10,000-chunk index takes a few tenths of a second, and a file saved meanwhile would
wait for it. Nothing is lost by waiting: the index on disk is a cache of the folder, checked
against it at start-up, and ``stop()`` writes what is pending.

It also notices the folder itself disappearing and coming back: inotify loses its watch when
the folder is deleted, so the worker re-schedules it and rescans.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from daemon.kb.files import is_ignored

if TYPE_CHECKING:
    from daemon.kb.index import KnowledgeBase

_LOGGER = logging.getLogger(__name__)

ROOT_CHECK_S = 1.0      # how often the worker checks that the folder still exists
MAX_DELAY_FACTOR = 8    # a never-ending burst is still processed after this many debounce times
SAVE_WITHIN_S = 10.0    # changes that never stop are still written to disk this often


class FolderWatcher:
    """Watches ``kb.folder`` recursively and applies changes to ``kb`` in debounced batches."""

    def __init__(self, kb: "KnowledgeBase", debounce_s: float,
                 on_update: Callable[[int, int], None] | None = None) -> None:
        self._kb = kb
        self._root = kb.folder
        self._debounce = max(0.0, debounce_s)
        self._on_update = on_update
        self._cond = threading.Condition()
        self._moves: list[tuple[Path, Path]] = []
        self._paths: dict[Path, None] = {}
        self._rescan = False
        self._root_lost = False
        self._first_event = 0.0
        self._last_event = 0.0
        self._unsaved_since = 0.0
        self._stopping = False
        self._observer: Any = None
        self._watch: Any = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        self._schedule()
        self._thread = threading.Thread(target=self._run, name="kb-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; waits at most ``timeout`` for the worker (the knowledge base's own
        stop flag makes a batch in progress give up at its next step)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                _LOGGER.info("knowledge base: the watcher is still in a batch; leaving it behind")
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(max(0.0, deadline - time.monotonic()))

    def pending(self) -> bool:
        """True when folder changes are waiting to be applied (or the watcher is stopping)."""
        with self._cond:
            return self._stopping or self._root_lost or bool(self._first_event)

    def _schedule(self) -> bool:
        """Watch the folder if it exists; True when a watch is active."""
        if self._watch is not None:
            return True
        if not self._root.is_dir():
            return False
        try:
            self._watch = self._observer.schedule(_Handler(self), str(self._root), recursive=True)
        except OSError as exc:   # e.g. the inotify watch limit (fs.inotify.max_user_watches)
            _LOGGER.error("knowledge base: cannot watch %s: %s", self._root, exc)
            return False
        return True

    def _unschedule(self) -> None:
        if self._watch is not None:
            try:
                self._observer.unschedule(self._watch)
            except (KeyError, OSError):
                pass
            self._watch = None

    # ------------------------------------------------------------------ events (observer thread)
    def queue(self, event: Any) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write") or (event.is_directory and kind == "modified"):
            return
        src = Path(event.src_path)
        with self._cond:
            if event.is_directory and src == self._root and kind in ("deleted", "moved"):
                self._root_lost = True     # inotify dropped its watch with the folder
                self._rescan = True
            elif kind == "moved":
                dst = Path(event.dest_path)
                self._moves.append((src, dst))
                self._paths[dst] = None
                self._rescan |= event.is_directory and not is_ignored(dst.name)
            elif event.is_directory:
                # A folder created (maybe moved in with files) or gone (maybe moved out): the
                # files inside get no events of their own, so rescan (stat only, cheap).
                self._rescan |= kind in ("created", "deleted") and not is_ignored(src.name)
            else:
                self._paths[src] = None
            now = time.monotonic()
            self._first_event = self._first_event or now
            self._last_event = now
            self._cond.notify_all()

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        self._load_embedder()
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            try:
                self._tick(*batch)
            except Exception:  # the watcher must outlive any single bad batch
                _LOGGER.exception("knowledge base: error while applying folder changes")

    def _load_embedder(self) -> None:
        """Have the embedding model ready before the first document arrives.

        Start-up loads it only when there is something to search (its warm-up query): with
        the folder missing or empty, the first file to appear would otherwise wait for the
        model (importing torch: 5-10 s on two cores), and questions asked meanwhile find
        nothing although the folder and the file are there.
        """
        try:
            self._kb.warm_up()
        except Exception as exc:   # e.g. the model is missing: each batch reports it again
            _LOGGER.error("knowledge base: cannot load the embedding model: %s", exc)

    def _next_batch(self) -> tuple[list[tuple[Path, Path]], list[Path], bool] | None:
        """Wait (lock held) for a quiet burst, or a second without events; None when stopping."""
        root_check = time.monotonic() + ROOT_CHECK_S
        while not self._stopping:
            if self._due():
                return self._take()
            now = time.monotonic()
            if not self._first_event:
                if now >= root_check:
                    return [], [], False
                self._cond.wait(root_check - now)
            else:
                limit = self._first_event + MAX_DELAY_FACTOR * max(self._debounce, 0.05)
                self._cond.wait(max(0.001, min(self._last_event + self._debounce, limit) - now))
        return None

    def _due(self) -> bool:
        if not self._first_event:
            return False
        now = time.monotonic()
        return (now - self._last_event >= self._debounce
                or now - self._first_event >= MAX_DELAY_FACTOR * max(self._debounce, 0.05))

    def _take(self) -> tuple[list[tuple[Path, Path]], list[Path], bool]:
        batch = (self._moves, list(self._paths), self._rescan)
        self._moves, self._paths, self._rescan = [], {}, False
        self._first_event = self._last_event = 0.0
        return batch

    def _tick(self, moves: list[tuple[Path, Path]], paths: list[Path], rescan: bool) -> None:
        exists = self._root.is_dir()
        if self._root_lost:
            self._root_lost = False
            self._unschedule()
            exists = exists and self._schedule()
        if not exists and self._watch is not None:
            _LOGGER.warning("knowledge base: folder %s was removed", self._root)
            self._unschedule()
            rescan = True
        elif exists and self._watch is None:
            _LOGGER.info("knowledge base: folder %s is back; rescanning", self._root)
            rescan = self._schedule() or rescan
        if not (moves or paths or rescan):
            self._kb.flush()        # the folder is quiet: write pending changes, finish interrupted work
            self._unsaved_since = 0.0
            return
        if self._kb.apply_changes(moves, paths, rescan=rescan, save=False):
            self._notify()
            now = time.monotonic()
            self._unsaved_since = self._unsaved_since or now
            if now - self._unsaved_since >= SAVE_WITHIN_S:
                self._kb.flush()
                self._unsaved_since = 0.0

    def _notify(self) -> None:
        if self._on_update is None:
            return
        status = self._kb.status()
        try:
            self._on_update(status["documents"], status["chunks"])
        except Exception:
            _LOGGER.exception("knowledge base: on_update callback failed")


class _Handler:
    """watchdog handler: everything goes to :meth:`FolderWatcher.queue`."""

    def __init__(self, watcher: FolderWatcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: Any) -> None:
        self._watcher.queue(event)
