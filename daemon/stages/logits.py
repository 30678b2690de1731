"""What the reply-shaping logits processors share (copy bias, echo guard, wrap-up).

llama-cpp-python calls a ``logits_processor`` with every token so far, the prompt included;
:class:`ReplyProcessor` remembers where the prompt ended (its first call sees the prompt only)
and hands subclasses the reply's own tokens. One instance serves one generation.
"""

from __future__ import annotations

from typing import Hashable, Sequence, TypeVar

import numpy as np


class ReplyProcessor:
    """Base for a per-generation logits processor that looks at the reply written so far."""

    _prompt_len: int | None = None

    def reply_tokens(self, input_ids: np.ndarray) -> list[int]:
        """The tokens generated after the prompt ([] on the first call)."""
        if self._prompt_len is None:
            self._prompt_len = len(input_ids)
        return [int(t) for t in input_ids[self._prompt_len:]]


T = TypeVar("T", bound=Hashable)


def continuations(source: Sequence[T], reply: Sequence[T], *, max_run: int, min_run: int,
                  end_token: T | None = None) -> set[T]:
    """The tokens of ``source`` that follow the longest run (``min_run``..``max_run`` tokens)
    of ``reply``'s last tokens found in it; ``end_token`` where that run ends ``source``."""
    for size in range(min(max_run, len(reply)), min_run - 1, -1):
        tail = list(reply[-size:])
        found: set[T] = set()
        for start in range(len(source) - size + 1):
            if list(source[start:start + size]) == tail:
                after = start + size
                if after < len(source):
                    found.add(source[after])
                elif end_token is not None:
                    found.add(end_token)
        if found:
            return found
    return set()
