"""Copy bias: nudge a small model to repeat the note it was given, token for token.

Measured on SmolLM2-135M (docs/quality.md): handed the one clause that answers, it still
sometimes writes the question back ("The last keeper came in more lighthouse") or a number of
its own ("boil for 30 minutes" from "leave for 20 minutes"). A logits processor fixes most of
it without a bigger model: every token of the note gets a small bonus, and the token that
continues the note where the reply's last tokens match it gets a larger one, so a copy, once
started, runs on through digits and names ("555 0142", "Dorrity"). When the reply has copied
the note to its end, ending the turn gets the larger bonus too.

The processor is a plain callable ``(input_ids, scores) -> scores`` as llama-cpp-python's
``logits_processor`` expects; it holds per-generation state, so make one per reply.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from daemon.stages.logits import ReplyProcessor, continuations

MATCH_TOKENS = 4             # the longest run of reply tokens looked up in the note


class NoteCopyBias(ReplyProcessor):
    """Logits processor favouring the note's tokens and the note's next token."""

    def __init__(self, note_tokens: Sequence[int], *, bias: float, follow_bias: float, end_token: int | None) -> None:
        self._note = list(note_tokens)
        self._ids = np.array(sorted(set(self._note)), dtype=np.intc)
        self._bias = float(bias)
        self._follow = float(follow_bias)
        self._end = end_token

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        reply = self.reply_tokens(input_ids)
        if not self._note:
            return scores
        out = np.array(scores, copy=True)
        out[self._ids[self._ids < len(out)]] += self._bias
        for token in self.next_tokens(reply):
            if 0 <= token < len(out):
                out[token] += self._follow
        return out

    def next_tokens(self, reply: Sequence[int]) -> set[int]:
        """The note tokens that continue the longest run of ``reply``'s last tokens found in
        the note (``end_token`` where that run ends the note); empty when none matches."""
        return continuations(self._note, reply, max_run=MATCH_TOKENS, min_run=1, end_token=self._end)
