"""Bounded conversation memory shared by live turns and text asks."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Callable

from daemon.messages import ChatMessage

_LOGGER = logging.getLogger(__name__)


def rough_tokens(text: str) -> int:
    """~4 characters a token: good enough for a budget, and needs no tokenizer."""
    return max(1, len(text) // 4)


def without_oldest(messages: list[ChatMessage]) -> list[ChatMessage]:
    """History messages (as :meth:`ConversationHistory.messages` gives them) less the oldest
    exchange: its question and, when there is one, its reply."""
    drop = 2 if len(messages) > 1 and messages[1].role == "assistant" else 1
    return messages[drop:]


MAX_BACKUPS = 5


def backup_name(path: Path) -> Path:
    """Where an unreadable history file goes: ``NAME.bad``, else ``NAME.bad-1`` to ``-4``,
    else (all five taken) the oldest of them is replaced, so they never pile up."""
    names = [path.with_name(f"{path.name}.bad")]
    names += [path.with_name(f"{path.name}.bad-{i}") for i in range(1, MAX_BACKUPS)]
    free = next((n for n in names if not n.exists() and not n.is_symlink()), None)
    return free if free is not None else min(names, key=lambda n: n.lstat().st_mtime)


class ConversationHistory:
    """The last ``max_turns`` exchanges, trimmed further to ``max_tokens``."""

    def __init__(self, max_turns: int, max_tokens: int,
                 count: Callable[[str], int] = rough_tokens, path: str | os.PathLike[str] | None = None) -> None:
        self._turns: deque[tuple[str, str]] = deque(maxlen=max(max_turns, 0) or None)
        self._max_turns = max_turns
        self._max_tokens = max_tokens
        self._count = count
        self._lock = threading.Lock()
        self._path = Path(path).expanduser() if path else None
        self._load()

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
            turns = [(str(user), str(assistant)) for user, assistant in data.get("turns", [])]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            self._set_aside(exc)
            return
        self._turns.extend(turns)

    def _set_aside(self, exc: Exception) -> None:
        """An unreadable file (a hand edit with a typo) is kept, not overwritten by the next turn."""
        assert self._path is not None
        if not self._path.is_file():
            _LOGGER.warning("conversation history %s unreadable, starting fresh: %s", self._path, exc)
            return
        backup = backup_name(self._path)
        try:
            os.replace(self._path, backup)
            os.utime(backup)                # set aside now: the next one replaces the oldest
        except OSError as err:
            _LOGGER.warning("conversation history %s unreadable (%s) and cannot be set aside (%s): "
                            "this session's history is not saved", self._path, exc, err)
            self._path = None
            return
        _LOGGER.warning("conversation history %s unreadable (%s): kept as %s, starting fresh",
                        self._path, exc, backup)

    def _save(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".history-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"turns": [list(t) for t in self._turns]}, fh)
            os.replace(tmp, self._path)
        except OSError as exc:
            _LOGGER.warning("cannot save conversation history to %s: %s", self._path, exc)

    def add(self, user: str, assistant: str) -> None:
        if self._max_turns == 0 or not user.strip():
            return
        with self._lock:
            self._turns.append((user.strip(), assistant.strip()))
            self._save()

    def clear(self) -> None:
        with self._lock:
            self._turns.clear()
            self._save()

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
