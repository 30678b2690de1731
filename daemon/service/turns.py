"""One reply in flight: its turn number, the clauses queued so far, and the outcome futures.

A turn lasts from the question until its last sample has left the speaker (or it was
interrupted): barge-in must work for the whole reply, not only while the LLM still writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping

from daemon.errors import BadArgumentError, SottovoceError
from daemon.messages import MAX_TEXT_CHARS, AudioChunk, TextChunk, TurnResult


class StageError(SottovoceError):
    """A stage failed on one question; the service goes on listening."""

    code = "Stage"


def check_text(text: str, what: str = "text") -> str:
    """Typed text for Ask/Say (D-Bus, the controller, the CLI), stripped; BadArgumentError
    when empty, too long, not valid UTF-8 (undecodable bytes kept as lone surrogates) or
    without a word (only emoji, symbols or punctuation). ``what`` names it ("question")."""
    if not (text or "").strip():
        raise BadArgumentError(f"the {what} is empty: give 1 to {MAX_TEXT_CHARS} characters")
    if len(text) > MAX_TEXT_CHARS:
        raise BadArgumentError(f"the {what} is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadArgumentError(f"the {what} is not valid UTF-8 text (check your terminal's encoding)") from None
    if not _has_words(text):
        verb = "answer" if what == "question" else "say"
        raise BadArgumentError(f"nothing to {verb}: the {what} has no words (only emoji, symbols or punctuation)")
    return text.strip()


def _has_words(text: str) -> bool:
    """A letter or digit, as written or as it would be read aloud ("+" is "plus"): Say
    refuses less than this on its own, so this refuses nothing Say would speak."""
    if any(ch.isalnum() for ch in text):
        return True
    from daemon.stages.speech_text import has_words, to_speakable

    return has_words(to_speakable(text))


@dataclass
class ActiveTurn:
    """A question being answered (``question`` is "" for Say)."""

    turn: int
    question: str
    chunks: list[TextChunk] = field(default_factory=list)
    task: "asyncio.Task[Any] | None" = None
    audio_s: float = 0.0            # seconds of reply audio handed to the speaker
    # Resolved once the reply text is complete (Ask returns then, speech may go on).
    text_done: "asyncio.Future[TurnResult]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    # A reply started before the end of the question was confirmed: nothing of it is heard
    # or announced until this resolves (see TurnKeeper.prepare).
    confirmed: "asyncio.Future[None] | None" = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def reply_ready(self, result: TurnResult) -> None:
        if not self.text_done.done():
            self.text_done.set_result(result)

    def failed(self, exc: BaseException) -> None:
        if not self.text_done.done():
            self.text_done.set_exception(exc)
            self.text_done.exception()      # retrieved: no "never retrieved" warning for Say

    def interrupted(self, spoken: str) -> None:
        """Barge-in or Interrupt(): an Ask still waiting gets what was actually said."""
        self.reply_ready(TurnResult(transcript=self.question, reply=spoken, sources=(),
                                    timings={}, interrupted=True, spoken_part=spoken))


def spoken_part(chunks: list[TextChunk], played: Mapping[Hashable, float], turn: int) -> str:
    """The reply text that was actually heard: whole chunks, then a share of a partial one."""
    words: list[str] = []
    for chunk in chunks:
        share = played.get((turn, chunk.index), 0.0)
        if share <= 0.0:
            break
        parts = chunk.text.split()
        words += parts if share >= 0.999 else parts[: int(len(parts) * share)]
        if share < 0.999:
            break
    return " ".join(words)


class OutputSink:
    """Turn audio -> the speaker, tagged ``(turn, clause)``; stale turns are dropped here."""

    def __init__(self, output: Any, active: ActiveTurn, is_current: Callable[[], bool],
                 started: Callable[[], None]) -> None:
        self._output = output
        self._active = active
        self._is_current = is_current
        self._started = started

    def write(self, chunk: AudioChunk) -> None:
        if not self._is_current():
            return
        self._output.play(chunk.samples, chunk.sample_rate, (chunk.turn, chunk.chunk_index))
        self._active.audio_s += len(chunk.samples) / chunk.sample_rate
        self._started()
