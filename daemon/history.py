"""Bounded conversation memory shared by live turns and text asks."""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

from daemon.messages import ChatMessage


def rough_tokens(text: str) -> int:
    """~4 characters a token: good enough for a budget, and needs no tokenizer."""
    return max(1, len(text) // 4)


class ConversationHistory:
    """The last ``max_turns`` exchanges, trimmed further to ``max_tokens``."""

    def __init__(self, max_turns: int, max_tokens: int,
                 count: Callable[[str], int] = rough_tokens) -> None:
        self._turns: deque[tuple[str, str]] = deque(maxlen=max(max_turns, 0) or None)
        self._max_turns = max_turns
        self._max_tokens = max_tokens
        self._count = count
        self._lock = threading.Lock()

    def add(self, user: str, assistant: str) -> None:
        if self._max_turns == 0 or not user.strip():
            return
        with self._lock:
            self._turns.append((user.strip(), assistant.strip()))

    def clear(self) -> None:
        with self._lock:
            self._turns.clear()

    def messages(self) -> list[ChatMessage]:
        """Newest exchanges that fit the token budget, oldest first."""
        with self._lock:
            turns = list(self._turns)
        kept: list[tuple[str, str]] = []
        used = 0
        for user, assistant in reversed(turns):
            cost = self._count(user) + self._count(assistant)
            if used + cost > self._max_tokens:
                break
            kept.append((user, assistant))
            used += cost
        out: list[ChatMessage] = []
        for user, assistant in reversed(kept):
            out.append(ChatMessage("user", user))
            if assistant:
                out.append(ChatMessage("assistant", assistant))
        return out

    def __len__(self) -> int:
        return len(self._turns)
