"""What indexing is doing right now: for ``status()`` and for the log.

Embedding runs at roughly ten to twenty chunks a second on two cores, so a file of a few
megabytes takes minutes. While it runs, ``describe()`` says which file of how many and how
many of its chunks are embedded, and the log gets a line when a large file starts and one
every ``LOG_EVERY_S`` while it goes on. A listener (the service, which then announces the
KnowledgeBase property on D-Bus) hears of each change, at most every ``NOTIFY_EVERY_S``
while chunks are embedded.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from daemon.kb.files import log_name

_LOGGER = logging.getLogger(__name__)

LOG_EVERY_S = 15.0           # a progress line this often while a long embedding runs
LARGE_CHUNKS = 256           # files with more chunks get a line when their embedding starts
NOTIFY_EVERY_S = 1.0         # the listener hears of embedded chunks at most this often


class IndexingProgress:
    """Thread-safe counters of the indexing run in progress (idle between runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files_total = 0
        self._files_done = 0
        self._label = ""
        self._chunks_total = 0
        self._chunks_done = 0
        self._next_log = 0.0
        self._next_notify = 0.0
        self._listener: Callable[[], None] | None = None

    def listen(self, listener: Callable[[], None] | None) -> None:
        """``listener()`` runs (on the indexing thread) when ``describe()`` may have changed."""
        self._listener = listener

    def _notify(self, force: bool = False) -> None:
        """Tell the listener; unless ``force``d, at most once every ``NOTIFY_EVERY_S``."""
        listener = self._listener
        if listener is None:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now < self._next_notify:
                return
            self._next_notify = now + NOTIFY_EVERY_S
        try:
            listener()
        except Exception:   # a listener's failure must not stop the indexing
            _LOGGER.exception("knowledge base: progress listener failed")

    def begin(self, files: int) -> None:
        with self._lock:
            was_busy = bool(self._files_total)
            self._files_total, self._files_done = files, 0
            self._label, self._chunks_total, self._chunks_done = "", 0, 0
        if files or was_busy:
            self._notify(force=True)

    def add_files(self, files: int) -> None:
        """A file that changed while it was indexed is queued again."""
        with self._lock:
            self._files_total += files

    def preparing(self, source: str) -> None:
        with self._lock:
            self._label, self._chunks_total, self._chunks_done = log_name(source), 0, 0
        self._notify()

    def embedding(self, sources: list[str], chunks: int) -> None:
        """The embedding of these files' new chunks starts."""
        more = len(sources) - 1
        first = log_name(sources[0])      # the label goes into log lines and the status line
        label = f"{first} and {more} more file{'s' if more > 1 else ''}" if more else first
        with self._lock:
            self._label, self._chunks_total, self._chunks_done = label, chunks, 0
            self._next_log = time.monotonic() + LOG_EVERY_S
        if chunks >= LARGE_CHUNKS:
            _LOGGER.info("knowledge base: embedding %s: %d new chunks", label, chunks)
        self._notify()

    def embedded(self, chunks: int) -> None:
        with self._lock:
            self._chunks_done += chunks
            now = time.monotonic()
            due = self._chunks_total and now >= self._next_log
            if due:
                self._next_log = now + LOG_EVERY_S
            label, done, total = self._label, self._chunks_done, self._chunks_total
        if due:
            _LOGGER.info("knowledge base: embedding %s: %d/%d chunks (%d%%)", label, done, total,
                         100 * done // max(total, 1))
        self._notify()

    def files_done(self, files: int) -> None:
        with self._lock:
            self._files_done = min(self._files_total, self._files_done + files)
            self._label, self._chunks_total, self._chunks_done = "", 0, 0
        self._notify()

    def end(self) -> None:
        self.begin(0)

    def describe(self) -> str:
        """"" when idle, else e.g. "file 1 of 3: big.txt, 3200 of 24310 chunks embedded"."""
        with self._lock:
            if not self._files_total:
                return ""
            current = min(self._files_done + 1, self._files_total)
            text = f"file {current} of {self._files_total}"
            if self._label:
                text += f": {self._label}"
            if self._chunks_total:
                text += f", {self._chunks_done} of {self._chunks_total} chunks embedded"
            return text
