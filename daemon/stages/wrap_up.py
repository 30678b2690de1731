"""Wrap-up: a long reply ends at a full stop, not wherever the token cap falls.

A reply cut by ``llm.max_tokens`` stops mid-sentence, and read aloud that sounds like a fault
("...if you need me to make a special dish that's only available"). Measured on SmolLM2-135M
(docs/quality.md, study 8): 7 of 45 chat replies ran to the 96-token cap mid-sentence. Once a
reply holds ``after`` tokens, this logits processor leaves only end-of-turn possible right after
a token that ends a sentence, so the reply finishes on the sentence it is writing;
``max_tokens`` stays the hard cap.

A plain callable ``(input_ids, scores) -> scores`` as llama-cpp-python's ``logits_processor``
expects; it holds per-generation state, so make one per reply.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from daemon.stages.logits import ReplyProcessor

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s*$")
_DIGIT_END = re.compile(r"\d\s*$")


def ends_sentence(previous: str, token: str) -> bool:
    """Whether ``token`` (after ``previous``, the text before it) closes a sentence; a full
    stop after a digit does not ("1." in "1.7 litres", or a numbered list)."""
    if not _SENTENCE_END.search(token):
        return False
    head = _SENTENCE_END.sub("", token)
    return not _DIGIT_END.search(head or previous)


class SentenceWrapUp(ReplyProcessor):
    """Logits processor: after ``after`` reply tokens, end the turn at the next sentence end."""

    def __init__(self, *, after: int, end_token: int, text_of: Callable[[int], str]) -> None:
        self._after = after
        self._end = end_token
        self._text_of = text_of

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        reply = self.reply_tokens(input_ids)
        if not self.should_end(reply) or not 0 <= self._end < len(scores):
            return scores
        out = np.full_like(scores, -np.inf)
        out[self._end] = 0.0
        return out

    def should_end(self, reply: list[int]) -> bool:
        """True when the reply is long enough and its last token ended a sentence."""
        if len(reply) < max(1, self._after):
            return False
        previous = self._text_of(reply[-2]) if len(reply) > 1 else ""
        return ends_sentence(previous, self._text_of(reply[-1]))
