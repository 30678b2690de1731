"""The small interfaces every stage backend implements.

Backends are plain synchronous classes; the pipeline runs them in worker threads.
Long-running calls take ``should_stop`` and check it between chunks, so an interrupted
turn stops at the next chunk boundary (inference itself cannot be cancelled).
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from daemon.messages import ChatMessage, Emotion, Passage

ShouldStop = Callable[[], bool]


def never_stop() -> bool:
    return False


class SpeechDetector(Protocol):
    """Frame-level voice activity: probability that a 32 ms, 16 kHz frame is speech."""

    frame_samples: int

    def reset(self) -> None: ...

    def probability(self, frame: np.ndarray) -> float: ...


class Transcriber(Protocol):
    def transcribe(self, audio: np.ndarray, *, hotwords: str | None = None) -> tuple[str, float]:
        """16 kHz float32 mono -> (text, worst no-speech probability). Empty text = no speech."""
        ...


class Retriever(Protocol):
    def retrieve(self, query: str, top_k: int | None = None) -> list[Passage]: ...


class ChatModel(Protocol):
    name: str

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        should_stop: ShouldStop = never_stop,
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; stop early when should_stop() is true."""
        ...

    def prompt_overflow(self, messages: Sequence[ChatMessage], max_tokens: int) -> int:
        """Tokens by which these messages plus a ``max_tokens`` reply would pass the model's
        context window; 0 when they fit, or when only a server can tell (it says so itself)."""
        ...


class SpeechSynthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize(
        self, text: str, *, emotion: Emotion | None = None, should_stop: ShouldStop = never_stop
    ) -> Iterator[np.ndarray]:
        """Yield float32 mono chunks in [-1, 1] at ``sample_rate``."""
        ...
