"""Cut loaded documents into chunks that remember their file, position and heading.

Splitting is llama-index's ``SentenceSplitter`` (sentence-aware, token-counted with overlap),
counting tokens with the embedding model's own WordPiece tokenizer so that a chunk of
``chunk_size`` tokens fits the model's window with its heading in front.

Long sections are split in pieces of at most ``PIECE_CHARS`` characters first (at a paragraph
break where there is one). The tokenizer holds the GIL for a whole call, and the splitter's
first call counts the tokens of everything it is given: a 19 MB section held it for about ten
seconds, and with it the event loop and the audio callbacks of the service. A piece takes
milliseconds, and the caller's ``check`` runs between pieces (to stop, or to drop a file that
changed meanwhile).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from daemon.kb.loaders import LoadedDocument

_LOGGER = logging.getLogger(__name__)

PIECE_CHARS = 20_000          # at most this much text per splitter call (about 10 ms of tokenizing)
_BREAKS = ("\n\n", "\n", ". ", " ")   # where a piece may end, best first


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has an id and a vector."""

    source: str           # path relative to the knowledge-base folder
    position: int         # chunk number inside the file
    heading: str
    text: str

    @property
    def embed_text(self) -> str:
        """What is embedded and keyword-indexed: the heading travels with the text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text

    @property
    def digest(self) -> str:
        return content_hash(self.embed_text)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _word_count_tokenizer(text: str) -> list[str]:
    # Close to WordPiece counts for English (about 1.3 pieces a word): used only when the
    # model's tokenizer.json is not available (an injected embedder without a local model).
    return re.findall(r"\w+|[^\w\s]", text)


class Chunker:
    """Splits :class:`LoadedDocument` sections into :class:`ChunkDraft` objects."""

    def __init__(self, chunk_size: int, chunk_overlap: int, tokenizer_file: Path | None = None) -> None:
        self._size = chunk_size
        self._overlap = chunk_overlap
        self._tokenizer_file = tokenizer_file
        self._splitter: Any = None
        self._lock = threading.Lock()

    def _get_splitter(self) -> Any:
        with self._lock:
            if self._splitter is None:
                from llama_index.core.node_parser import SentenceSplitter

                self._splitter = SentenceSplitter(
                    chunk_size=self._size,
                    chunk_overlap=self._overlap,
                    tokenizer=self._make_tokenizer(),
                )
            return self._splitter

    def _make_tokenizer(self) -> Callable[[str], list[Any]]:
        if self._tokenizer_file is not None and self._tokenizer_file.is_file():
            try:
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(self._tokenizer_file))
                tok.no_padding()      # the model's file pads to 128, which would count as tokens
                tok.no_truncation()
                return lambda text: tok.encode(text, add_special_tokens=False).ids
            except Exception as exc:  # a damaged tokenizer file must not stop indexing
                _LOGGER.warning("cannot load %s (%s); counting words instead", self._tokenizer_file, exc)
        return _word_count_tokenizer

    def chunk(self, source: str, doc: LoadedDocument, check: Callable[[], None] | None = None) -> list[ChunkDraft]:
        """All chunks of one document, numbered in reading order; ``check()`` runs between
        pieces of text and may raise to give up."""
        splitter = self._get_splitter()
        drafts: list[ChunkDraft] = []
        fallback_heading = doc.title or _humanize(source)
        for section in doc.sections:
            heading = section.heading or fallback_heading
            for part in bounded_pieces(section.text):
                if check is not None:
                    check()
                for piece in splitter.split_text(part):
                    piece = piece.strip()
                    if piece:
                        drafts.append(ChunkDraft(source, len(drafts), heading, piece))
        return drafts


def bounded_pieces(text: str, limit: int = PIECE_CHARS) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` characters, each ending at the best
    break found in its second half (a paragraph, a line, a sentence, a space); a text within
    the limit is returned whole, so ordinary documents chunk exactly as before."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > limit:
        end = start + limit
        for mark in _BREAKS:
            cut = text.rfind(mark, start + limit // 2, end)
            if cut >= 0:
                end = cut + len(mark)
                break
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


def _humanize(source: str) -> str:
    """'manuals/zephyr_kettle.txt' -> 'zephyr kettle': a name that helps retrieval."""
    return re.sub(r"[_\-.]+", " ", Path(source).stem).strip()
