"""Copy bias on the embedded LLM (SmolLM2-135M): given a note, the reply repeats its digits and
names exactly, and the chat path is left alone."""

from __future__ import annotations

from typing import Any

from daemon.config import Config
from daemon.messages import ChatMessage, Emotion, Passage
from daemon.stages.copy_bias import NoteCopyBias
from daemon.stages.prompt import PromptBuilder, grounding_note

# Repeated digits are what a repeat penalty and a small model's habits get wrong ("555 1423").
NOTE = "Register the kettle at the Zephyr service desk, phone 0800 555 0142."


def _reply(llm: Any, cfg: Config, question: str, notes: list[Passage]) -> str:
    emotion = Emotion(cfg.emotion.default, cfg.emotion.intensity)
    messages = PromptBuilder(cfg).build(question, notes, [], emotion)
    return "".join(llm.stream(messages, max_tokens=cfg.llm.max_tokens, temperature=0.0))


def test_the_note_is_read_back_from_a_grounded_prompt(default_config: Config) -> None:
    emotion = Emotion("neutral", 0.5)
    builder = PromptBuilder(default_config)
    grounded = builder.build("What is the number?", [Passage(NOTE, "k.txt", 0.6)], [], emotion)
    assert grounding_note(grounded) == NOTE
    assert grounding_note(builder.build("Tell me a joke.", [], [ChatMessage("user", "Note: x")], emotion)) == ""


def test_the_next_note_token_follows_the_longest_match() -> None:
    bias = NoteCopyBias([5, 6, 7, 5, 8], bias=1.0, follow_bias=3.0, end_token=99)
    assert bias.next_tokens([5]) == {6, 8}            # "5" is followed by 6 and by 8 in the note
    assert bias.next_tokens([7, 5]) == {8}            # the longer match decides
    assert bias.next_tokens([5, 8]) == {99}           # the note is copied to its end: stop
    assert bias.next_tokens([42]) == set()
    import numpy as np

    scores = bias(np.array([1, 2, 3], dtype=np.intc), np.zeros(100, dtype=np.float32))
    assert scores[5] == scores[7] == 1.0 and scores[42] == 0.0


def test_a_grounded_reply_copies_the_phone_number(smollm: Any, default_config: Config) -> None:
    reply = _reply(smollm, default_config, "What is the phone number of the service desk?",
                   [Passage(NOTE, "zephyr_kettle_manual.txt", 0.6)])
    assert "0800 555 0142" in reply, reply


def test_a_garbled_question_is_not_copied_back(smollm: Any, default_config: Config) -> None:
    # tiny.en heard "Who was the last keeper of Skerrimore lighthouse?" like this; without the
    # bias the model answered "The last keeper came in more lighthouse."
    reply = _reply(smollm, default_config, "Who was the last keeper once came in more lighthouse",
                   [Passage("The last keeper was Ewan Dorrity.", "skerrimore_lighthouse.md", 0.6)])
    assert "Dorrity" in reply, reply
