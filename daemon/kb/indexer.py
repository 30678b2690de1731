"""One file, from disk to chunks: size cap, reading, content hash, parsing, chunking, terms.

Everything that can go wrong with a single document ends here as a :class:`DocRecord` with
an ``error``, so one bad file never stops the others. Only giving up raises: ``check()``, run
between bounded pieces of work, raises :class:`~daemon.kb.cancel.Interrupted` to stop or
:class:`~daemon.kb.cancel.FileChanged` when the file changed on disk meanwhile.

The work is done here, outside the knowledge base's locks, down to the keyword statistics of
every chunk, so that committing a file is only a merge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from daemon.kb.cancel import FileChanged, Interrupted
from daemon.kb.chunking import ChunkDraft, Chunker, bounded_pieces
from daemon.kb.files import _reason, log_name
from daemon.kb.hybrid import CountedTerms
from daemon.kb.loaders import DocumentError, LoadedDocument, load_document
from daemon.kb.state import DocRecord
from daemon.kb.textutil import index_terms
from daemon.kb.vocab import extract_terms

_LOGGER = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A file ready to commit: new chunks, or only a refreshed record (unchanged or failed)."""

    source: str
    record: DocRecord
    drafts: list[ChunkDraft] | None = None
    unchanged: bool = False
    counted: CountedTerms | None = None      # the drafts' keyword statistics


Check = Callable[[], None]
# Measured on two cores: about 800 chunks a megabyte at 10-20 a second, then their sentences.
TOO_BIG_WHY = "(rag.max_file_mb); on a CPU each MB takes a minute or two to embed: split the file or raise the limit"
TERMS_STEP = 256             # chunks between two checks while counting keyword terms


def _no_check() -> None:
    return None


@dataclass(frozen=True)
class FileIndexer:
    root: Path
    chunker: Chunker
    max_bytes: int
    common_words: frozenset[str]

    def prepare(self, source: str, st: os.stat_result, old: DocRecord | None, check: Check = _no_check) -> Prepared:
        record = DocRecord(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        prepared = Prepared(source, record)
        try:
            self._fill(prepared, old, check)
        except (Interrupted, FileChanged):
            raise
        except Exception as exc:  # a parser bug must not stop the service: report and go on
            _LOGGER.warning("knowledge base: %s: unexpected error while indexing", log_name(source), exc_info=True)
            record.error = f"cannot index ({type(exc).__name__}: {exc})"
            prepared.drafts = None
        if record.error:
            _LOGGER.warning("knowledge base: skipping %s: %s", log_name(source), record.error)
        return prepared

    def _fill(self, prepared: Prepared, old: DocRecord | None, check: Check) -> None:
        record = prepared.record
        if record.size > self.max_bytes:
            record.error = f"file is {_size(record.size)}, over the {_size(self.max_bytes)} limit {TOO_BIG_WHY}"
            return
        try:
            with open(self.root / prepared.source, "rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as exc:
            record.error = _reason(exc)
            return
        if len(data) > self.max_bytes:
            record.error = f"file is over the {_size(self.max_bytes)} limit {TOO_BIG_WHY}"
            return
        record.sha256 = hashlib.sha256(data).hexdigest()
        if old is not None and not old.error and old.sha256 == record.sha256:
            prepared.record = dataclasses.replace(old, size=record.size, mtime_ns=record.mtime_ns,
                                                  ctime_ns=record.ctime_ns, chunk_ids=list(old.chunk_ids))
            prepared.unchanged = True
            return
        check()
        try:
            doc = load_document(Path(prepared.source), data)
        except DocumentError as exc:
            record.error = str(exc)
            return
        del data
        drafts = self.chunker.chunk(prepared.source, doc, check)
        if not drafts:
            record.error = "no text found in the document"
            return
        record.terms = self._terms(doc, check)
        record.named_by_file = not doc.title and any(not s.heading for s in doc.sections)
        prepared.counted = _count_terms(drafts, check)
        prepared.drafts = drafts

    def _terms(self, doc: LoadedDocument, check: Check) -> dict[str, list[float]]:
        """The document's distinctive terms, counted piece by piece (``check`` between)."""
        terms: dict[str, list[float]] = {}
        headings = [doc.title] + [s.heading for s in doc.sections]
        parts: list[tuple[str, tuple[str, ...]]] = [(piece, ()) for piece in bounded_pieces(doc.text)]
        for text, heads in parts + [("", tuple(headings))]:     # in the order of one whole pass
            check()
            for term, (count, kind) in extract_terms(text, heads, self.common_words).items():
                entry = terms.setdefault(term, [0.0, kind])
                entry[0] += count
                entry[1] = max(entry[1], kind)
        return terms


def _count_terms(drafts: list[ChunkDraft], check: Check) -> CountedTerms:
    counts: list[Counter[str]] = []
    for start in range(0, len(drafts), TERMS_STEP):
        check()
        counts.extend(Counter(index_terms(d.embed_text)) for d in drafts[start:start + TERMS_STEP])
    check()
    return CountedTerms.of(counts)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
