"""Why indexing gives up part-way, and the checks it makes between two pieces of work.

Indexing is a loop of bounded steps (a piece of text chunked, a batch of chunks embedded).
Between two steps it checks whether it should go on: the knowledge base is stopping
(:class:`IndexingStopped`), newer folder changes are waiting for work that can wait
(:class:`Superseded`), or the file it works on changed or vanished (:class:`FileChanged`).
Work given up is dropped whole; the index only ever holds complete files.
"""

from __future__ import annotations

import os
from pathlib import Path


class Interrupted(Exception):
    """Indexing gave up at a step boundary; what was committed before stays consistent."""


class IndexingStopped(Interrupted):
    """The knowledge base is stopping (service shutdown, reload, test teardown)."""


class Superseded(Interrupted):
    """Newer folder changes are waiting; work that is only a cache can be finished later."""


class FileChanged(Exception):
    """The file being indexed changed or vanished on disk; its partial work is dropped."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.source = source


def same_on_disk(path: Path, size: int, mtime_ns: int, ctime_ns: int) -> bool:
    """True while ``path`` is still the file that was stat()ed as (size, mtime, ctime)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (size, mtime_ns, ctime_ns)
