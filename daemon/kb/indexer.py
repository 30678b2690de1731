"""One file, from disk to chunks: size cap, reading, content hash, parsing, chunking, terms.

Everything that can go wrong with a single document ends here as a :class:`DocRecord` with
an ``error``; nothing raises, so one bad file never stops the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from daemon.kb.chunking import ChunkDraft, Chunker
from daemon.kb.files import _reason
from daemon.kb.loaders import DocumentError, load_document
from daemon.kb.state import DocRecord
from daemon.kb.vocab import extract_terms

_LOGGER = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A file ready to commit: new chunks, or only a refreshed record (unchanged or failed)."""

    source: str
    record: DocRecord
    drafts: list[ChunkDraft] | None = None
    unchanged: bool = False


@dataclass(frozen=True)
class FileIndexer:
    root: Path
    chunker: Chunker
    max_bytes: int
    common_words: frozenset[str]

    def prepare(self, source: str, st: os.stat_result, old: DocRecord | None) -> Prepared:
        record = DocRecord(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        prepared = Prepared(source, record)
        try:
            self._fill(prepared, old)
        except Exception as exc:  # a parser bug must not stop the service: report and go on
            _LOGGER.warning("knowledge base: %s: unexpected error while indexing", source, exc_info=True)
            record.error = f"cannot index ({type(exc).__name__}: {exc})"
            prepared.drafts = None
        if record.error:
            _LOGGER.warning("knowledge base: skipping %s: %s", source, record.error)
        return prepared

    def _fill(self, prepared: Prepared, old: DocRecord | None) -> None:
        record = prepared.record
        if record.size > self.max_bytes:
            record.error = f"file is {_size(record.size)}, over the {_size(self.max_bytes)} limit (rag.max_file_mb)"
            return
        try:
            with open(self.root / prepared.source, "rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as exc:
            record.error = _reason(exc)
            return
        if len(data) > self.max_bytes:
            record.error = f"file is over the {_size(self.max_bytes)} limit (rag.max_file_mb)"
            return
        record.sha256 = hashlib.sha256(data).hexdigest()
        if old is not None and not old.error and old.sha256 == record.sha256:
            prepared.record = dataclasses.replace(old, size=record.size, mtime_ns=record.mtime_ns,
                                                  ctime_ns=record.ctime_ns, chunk_ids=list(old.chunk_ids))
            prepared.unchanged = True
            return
        try:
            doc = load_document(Path(prepared.source), data)
        except DocumentError as exc:
            record.error = str(exc)
            return
        drafts = self.chunker.chunk(prepared.source, doc)
        if not drafts:
            record.error = "no text found in the document"
            return
        headings = [doc.title] + [s.heading for s in doc.sections]
        record.terms = extract_terms(doc.text, headings, self.common_words)
        record.named_by_file = not doc.title and any(not s.heading for s in doc.sections)
        prepared.drafts = drafts


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
