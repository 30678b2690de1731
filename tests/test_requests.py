"""Requests for invention (jokes, stories, poems) take the chat path; questions about facts do not."""

from __future__ import annotations

import pytest

from daemon.stages.requests import wants_invention


@pytest.mark.parametrize("text", [
    "Tell me a joke about kettles.",
    "tell me a short story about the lighthouse keeper",
    "Do you know any jokes about bread?",
    "Write a poem about Skerrimore lighthouse.",
    "Give me another riddle",
    "Sing me a little song about sourdough",
])
def test_requests_for_invention(text: str) -> None:
    assert wants_invention(text)


@pytest.mark.parametrize("text", [
    "What's the story behind Skerrimore lighthouse?",
    "Tell me the story of the lighthouse.",
    "How many steps does Skerrimore lighthouse have?",
    "Is the Zephyr kettle a joke?",
    "What does error E7 mean on the Zephyr kettle?",
])
def test_questions_about_facts(text: str) -> None:
    assert not wants_invention(text)
