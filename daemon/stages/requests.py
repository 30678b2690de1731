"""What kind of reply a request wants, read from its words alone.

A request for a joke, a story or a poem wants invention, not a sentence copied from the notes:
"tell me a joke about kettles" goes to the chat path even though the knowledge base knows
kettles. Asking about "the story of" something stays a question about facts.
"""

from __future__ import annotations

import re

# A verb that asks for something, then "a/any/another ... joke" (up to two words between).
_CREATIVE = re.compile(
    r"\b(?:tell|write|make up|give|sing|know|have|got|share|say|compose|invent|hear|recite)\b"
    r".*?\b(?:a|an|another|any|some|one more|your best)\s+(?:[a-z'-]+\s+){0,2}?"
    r"(?:jokes?|story|stories|poems?|riddles?|limericks?|puns?|haikus?|songs?|rhymes?)\b",
    re.IGNORECASE,
)


def wants_invention(request: str) -> bool:
    """True when ``request`` asks for a joke, story, poem or the like (the chat path)."""
    return bool(_CREATIVE.search(request))
