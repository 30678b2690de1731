"""One embedding model shared by questions and indexing, questions first.

The model runs one call at a time. Indexing takes it for one batch (``EMBED_BATCH`` texts,
about two seconds on two busy cores) and gives it back; a question waiting meanwhile gets it
next, before indexing's following batch. A plain lock would not promise that: the indexing
thread releases and at once re-acquires it, and a waiting question can lose every time.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class EmbedGate:
    """Mutual exclusion in which urgent users (questions) go before batch users (indexing)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """For a question: waits at most for the batch in progress."""
        with self._cond:
            self._urgent_waiting += 1
            try:
                while self._busy:
                    self._cond.wait()
                self._busy = True
            finally:
                self._urgent_waiting -= 1
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """For one indexing batch: waits until no question is waiting or running."""
        with self._cond:
            while self._busy or self._urgent_waiting:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @property
    def questions_waiting(self) -> int:
        """Urgent users waiting for the model now."""
        with self._cond:
            return self._urgent_waiting

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()
