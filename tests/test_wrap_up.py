"""Wrap-up on the embedded LLM (SmolLM2-135M): a long reply ends on a full stop instead of
wherever the token cap cuts it."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pytest

from daemon.config import Config
from daemon.messages import Emotion
from daemon.stages.prompt import PromptBuilder
from daemon.stages.wrap_up import SentenceWrapUp, ends_sentence

STORY = "Tell me a story about a dragon."     # runs past the cap without the wrap-up (seed 1)
FULL_STOP = re.compile(r"[.!?][\"')\]]*\s*$")


def test_what_ends_a_sentence() -> None:
    assert ends_sentence("fire", ".") and ends_sentence("away", "!\"") and ends_sentence("", " too?")
    assert not ends_sentence("1", ".")            # "1.7 litres", "1. Respect..."
    assert not ends_sentence("dragon", ",") and not ends_sentence("", " dragon")


def test_after_enough_tokens_only_the_end_of_turn_may_follow_a_full_stop() -> None:
    texts = {1: " The", 2: " dragon", 3: " flew", 4: ".", 5: " 1", 9: "<end>"}
    wrap = SentenceWrapUp(after=3, end_token=9, text_of=texts.__getitem__)
    assert wrap.should_end([1, 2, 3, 4])
    assert not wrap.should_end([1, 4])                  # too short yet
    assert not wrap.should_end([1, 2, 5, 4])            # "1." is not a sentence end
    prompt = np.array([7, 7], dtype=np.intc)
    assert np.all(wrap(prompt, np.zeros(10, dtype=np.float32)) == 0)     # the first call: the prompt
    scores = wrap(np.array([7, 7, 1, 2, 3, 4], dtype=np.intc), np.zeros(10, dtype=np.float32))
    assert scores[9] == 0 and np.isinf(np.delete(scores, 9)).all()


def _story(llm: Any, cfg: Config, seed: int) -> str:
    messages = PromptBuilder(cfg).build(STORY, [], [], Emotion(cfg.emotion.default, cfg.emotion.intensity))
    llm._llm.set_seed(seed)
    return "".join(llm.stream(messages, max_tokens=cfg.llm.max_tokens, temperature=cfg.llm.temperature)).strip()


@pytest.fixture(scope="module")
def no_wrap_up(default_config: Config) -> Any:
    from daemon.stages.llm_llamacpp import LlamaCppChatModel

    return LlamaCppChatModel(dataclasses.replace(default_config.llm, wrap_up_tokens=0),
                             own_name=default_config.persona.name)


def test_without_the_wrap_up_the_story_is_cut_mid_sentence(no_wrap_up: Any, default_config: Config) -> None:
    story = _story(no_wrap_up, default_config, 1)
    assert not FULL_STOP.search(story), story
    assert no_wrap_up.count_tokens(story) >= default_config.llm.max_tokens - 2


def test_with_the_wrap_up_every_story_ends_on_a_full_stop_within_the_cap(smollm: Any, default_config: Config) -> None:
    for seed in (1, 2, 3):
        story = _story(smollm, default_config, seed)
        assert FULL_STOP.search(story), story
        assert smollm.count_tokens(story) >= default_config.llm.wrap_up_tokens - 16, story   # not cut short
