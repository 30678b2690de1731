"""Whisper's n-best list from a beam search, and the tie-break that reads it.

faster-whisper keeps only the best hypothesis of its beam. When two readings of the same
sound are all but tied ("It's not that may correct Quillfeather Bakery" against "Who is not
that may correct Quillfeather Bakery", 0.003 apart in average log-probability per token),
the first is a coin toss; someone talking to an assistant is more often asking something,
and the question word decides what kind of answer is looked for. ``HypothesisRecorder``
stands between faster-whisper and the CTranslate2 model and has a beam search return its
``n`` best; ``prefer_question`` picks among them (docs/quality.md, study 12).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

# A sentence that starts like a question: a question word, or an auxiliary put first.
_QUESTION_START = re.compile(
    r"^\W*(?:who|whom|whose|what|when|where|which|why|how|is|are|was|were|do|does|did|can|could|"
    r"will|would|should|shall|may|might|has|have|had)\b",
    re.IGNORECASE,
)

Hypothesis = tuple[list[int], float]       # token ids, average log-probability per token


class HypothesisRecorder:
    """Forwards everything to a CTranslate2 Whisper model; between :meth:`start` and
    :meth:`stop`, each beam-search ``generate`` returns ``n`` hypotheses, and all of them
    are kept (faster-whisper reads only the first, which stays the beam's best)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._n = 1
        self._calls: list[list[Hypothesis] | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def start(self, n: int) -> None:
        self._n, self._calls = n, []

    def stop(self) -> list[list[Hypothesis] | None]:
        """One entry per ``generate`` call since :meth:`start`: its hypotheses, or None for
        a call that did not search a beam (Whisper's sampling fallback)."""
        calls, self._n, self._calls = self._calls, 1, []
        return calls

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        beam = int(kwargs.get("beam_size", 1))
        recording = self._n > 1 and beam > 1
        if recording:
            kwargs["num_hypotheses"] = min(self._n, beam)
        results = self._model.generate(*args, **kwargs)
        if self._n > 1:
            self._calls.append(
                [(list(ids), float(score)) for ids, score in zip(results[0].sequences_ids, results[0].scores)]
                if recording else None
            )
        return results


def reads_as_question(text: str) -> bool:
    return bool(_QUESTION_START.match(text))


def prefer_question(hypotheses: Sequence[tuple[str, float]], margin: float) -> int:
    """Index of the hypothesis to keep, given (text, average log-probability) best first: the
    best, unless it does not read as a question and another within ``margin`` of it does."""
    if not hypotheses or margin <= 0 or reads_as_question(hypotheses[0][0]):
        return 0
    best = hypotheses[0][1]
    for i, (text, score) in enumerate(hypotheses[1:], 1):
        if best - score <= margin and reads_as_question(text):
            return i
    return 0
