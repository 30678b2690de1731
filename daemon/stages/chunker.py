"""Cutting a streamed reply into clauses the TTS can start on before the reply is finished.

The first clause is allowed to be short (it sets the time to first audio); later ones are
longer so the voice keeps a natural rhythm. A period only ends a sentence when whitespace
follows it and it does not close an abbreviation or an initial, so "6.45", "e.g." and
"Mr. Smith" stay whole.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs mr mrs ms dr st no approx ca incl fig min max jr sr prof mt ave est dept".split()
)
_SENTENCE_END = ".!?…"
_CLAUSE_END = ";:—"
_CONJUNCTION = re.compile(r" (?:and|but|or|so|because|which|that|while|when|where|then) ")
_WORD_BEFORE = re.compile(r"([\w.]+)\.$")


class ClauseChunker:
    """Feed text pieces as the model writes them; get back complete clauses.

    ``min_chars``: a comma, colon or semicolon ends a clause only once it is this long
    (``first_min_chars`` for the first clause). ``max_chars``: a clause with no punctuation
    is cut at a space once it grows past this (``first_max_chars`` for the first one), before
    a conjunction when there is one; no clause is longer, unless it has no space to cut at.
    """

    def __init__(
        self,
        min_chars: int = 40,
        *,
        first_min_chars: int = 12,
        max_chars: int = 180,
        first_max_chars: int = 80,
    ) -> None:
        self.min_chars = min_chars
        self.first_min_chars = min(first_min_chars, min_chars)
        self.max_chars = max(max_chars, min_chars + 1)
        self.first_max_chars = max(min(first_max_chars, self.max_chars), self.first_min_chars + 1)
        self._buffer = ""
        self._emitted = 0

    def reset(self) -> None:
        """Forget any partial clause (a new reply)."""
        self._buffer = ""
        self._emitted = 0

    def feed(self, piece: str) -> list[str]:
        """Add streamed text; return the clauses it completed (maybe none)."""
        self._buffer += piece
        out: list[str] = []
        while (cut := self._find_cut()) is not None:
            clause, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            out.append(clause)
            self._emitted += 1
        return out

    def flush(self) -> list[str]:
        """The rest of the reply, once the stream has ended."""
        rest, self._buffer = self._buffer.strip(), ""
        if not rest or not any(ch.isalnum() for ch in rest):
            return []
        self._emitted += 1
        return [rest]

    # ----------------------------------------------------------------- cutting
    def _find_cut(self) -> int | None:
        """Index just after the first boundary in the buffer, or None to wait for more text."""
        buf = self._buffer
        limit = self.first_min_chars if self._emitted == 0 else self.min_chars
        longest = self.first_max_chars if self._emitted == 0 else self.max_chars
        # Only boundaries that leave a clause of at most ``longest``: a whole text fed at once
        # (Say, `speak`) with its first full stop 3,000 characters in must still be cut.
        for i in range(min(len(buf) - 1, longest)):   # the last character waits for its follower
            if not _speakable(buf[:i]):
                continue                               # "1." or "-" alone is no clause
            if self._boundary(buf, i, limit):
                return i + 1
        if len(buf) > longest:
            return _forced_cut(buf, longest)
        return None

    def _boundary(self, buf: str, i: int, limit: int) -> bool:
        ch, nxt = buf[i], buf[i + 1]
        if ch == "\n":
            return nxt == "\n" or nxt in "-*+•#" or _ends_item(buf[:i])
        if not nxt.isspace():
            return False
        length = len(buf[:i].strip())
        if ch in _SENTENCE_END:
            return self._is_sentence_end(buf, i)
        if ch in _CLAUSE_END:
            return length >= limit
        return ch == "," and length >= limit and len(buf[:i].split()) >= 3

    def _is_sentence_end(self, buf: str, i: int) -> bool:
        if buf[i] != ".":
            return True
        match = _WORD_BEFORE.search(buf[: i + 1])
        if match is None:
            return True
        word = match.group(1).lower().rstrip(".")
        if word in _ABBREVIATIONS:
            return False
        # An initial ("J. Smith") or a dotted abbreviation ("U.S.") is not a sentence end.
        return not (len(word) == 1 and word.isalpha()) and not re.fullmatch(r"(\w\.)+\w", word)


def _forced_cut(buf: str, longest: int) -> int | None:
    """Where to cut a clause with no punctuation: before a late conjunction, else at a space."""
    window = buf[:longest]
    best = max((m.start() for m in _CONJUNCTION.finditer(window)), default=-1)
    if best >= longest // 3 and _speakable(buf[:best]):
        return best + 1
    space = window.rfind(" ")
    return space + 1 if space > 0 and _speakable(buf[:space]) else None


def _speakable(clause: str) -> bool:
    """A clause worth sending alone: it has a letter (not just "1." or "-")."""
    return any(ch.isalpha() for ch in clause)


def _ends_item(text: str) -> bool:
    """The line just finished is a list item or heading: it stands as its own clause."""
    line = text.rsplit("\n", 1)[-1].strip()
    return bool(re.match(r"^(?:[-*+•]|\d{1,2}[.)]|#{1,6})\s", line))
