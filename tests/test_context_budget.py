"""The prompt fits the embedded LLM's context window (SmolLM2-135M, 2048 tokens): the count
used for the budget is never below the real prompt, remembered exchanges are left out oldest
first to make room, and a question too long on its own is refused in one line."""

from __future__ import annotations

from typing import Any

import pytest

from daemon import errors
from daemon.config import Config
from daemon.history import ConversationHistory, without_oldest
from daemon.messages import ChatMessage, Emotion, Passage
from tests.fixtures_core import one_line_error, sottovoce
from tests.fixtures_quality import make_pipeline

NEUTRAL = Emotion("neutral", 0.5)


def numbers(start: int, chars: int) -> str:
    """Text of about one token a character: what a pasted table of figures looks like."""
    return " ".join(str(n) for n in range(start, start + chars))[:chars].strip()


def real_prompt_tokens(llm: Any, messages: list[ChatMessage]) -> int:
    """What llama.cpp itself counts for the chat prompt (its chat template included)."""
    payload = [{"role": m.role, "content": m.content} for m in messages]
    return int(llm._llm.create_chat_completion(payload, max_tokens=1, temperature=0.0)["usage"]["prompt_tokens"])


def test_prompt_tokens_bound_the_real_prompt_closely(smollm: Any, default_config: Config) -> None:
    from daemon.stages.prompt import PromptBuilder

    build = PromptBuilder(default_config).build
    note = [Passage("Error E7 means the kettle was switched on without water.", "kettle.md", 1.0)]
    history = [ChatMessage("user", "What is 12 times 14?"), ChatMessage("assistant", "It is 168.")]
    for messages in (build("Tell me a joke.", [], [], NEUTRAL),
                     build("What does E7 mean?", note, history, NEUTRAL),
                     build(numbers(100, 900), [], history, NEUTRAL)):
        counted, real = smollm.prompt_tokens(messages), real_prompt_tokens(smollm, messages)
        assert real <= counted <= real + 8 * len(messages) + 8, (counted, real)


def test_oldest_exchanges_make_room_for_the_question(default_config: Config, quality_kb: Any,
                                                      smollm: Any, piper_tts: Any, ask_turn: Any) -> None:
    # Two remembered exchanges of figures: within the history's own budget (600 tokens at
    # ~4 characters a token), but ~1,800 real tokens, and the question ~400 more.
    pipe = make_pipeline(default_config, quality_kb, smollm, piper_tts)
    for i in range(2):
        pipe.history.add(f"Note these figures: {numbers(100 + 400 * i, 900)}", f"Noted, list {i + 1}.")
    assert len(pipe.history.messages()) == 4
    question = f"What is the sum of {numbers(300, 400)}?"
    full = pipe.prompts.build(question, [], pipe.history.messages(), NEUTRAL)
    assert smollm.prompt_overflow(full, default_config.llm.max_tokens) > 0   # as it was: llama.cpp refused it

    messages = pipe.messages_for(question, [], NEUTRAL)
    assert smollm.prompt_overflow(messages, default_config.llm.max_tokens) == 0
    kept = [m.content for m in messages if m.role == "assistant"]
    assert kept == ["Noted, list 2."]      # the newest stays
    result = ask_turn(pipe, question)
    assert result.reply.strip(), result


def test_a_question_too_long_on_its_own_is_refused(default_config: Config, quality_kb: Any,
                                                     smollm: Any, piper_tts: Any) -> None:
    pipe = make_pipeline(default_config, quality_kb, smollm, piper_tts)
    with pytest.raises(errors.BadArgumentError, match="too long for the language model"):
        pipe.messages_for(numbers(100, 1990), [], NEUTRAL)


def test_without_oldest_drops_one_exchange() -> None:
    history = ConversationHistory(6, 600)
    history.add("first?", "")            # an exchange whose reply was cut off
    history.add("second?", "Two.")
    history.add("third?", "Three.")
    messages = history.messages()
    assert [m.content for m in without_oldest(messages)] == ["second?", "Two.", "third?", "Three."]
    assert [m.content for m in without_oldest(without_oldest(messages))] == ["third?", "Three."]
    assert without_oldest([]) == []


def test_cli_refuses_a_question_too_long_for_the_model(cli_env: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = sottovoce("ask", "--local", numbers(100, 1990), "--out", str(tmp_path / "a.wav"), env=cli_env)
    one_line_error(res, errors.EXIT_BAD_ARG, "too long for the language model", "tokens",
                   ignore="sottovoce: indexing")
