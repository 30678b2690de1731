"""Answer-quality fixtures: the sample knowledge base on the real embedder, the real SmolLM2
chat model, and a pipeline (knowledge base + LLM + piper) for whole turns; each built once."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from daemon.config import Config
from daemon.messages import TurnResult
from tests.fixtures_kb import SAMPLE_KB


def open_kb(folder: Path, index_dir: Path, cfg: Config, embedder: Any) -> Any:
    """A KnowledgeBase over ``folder`` with its index in ``index_dir``, opened."""
    from daemon.kb import KnowledgeBase

    rag = dataclasses.replace(cfg.rag, knowledge_base=str(folder), index_dir=str(index_dir))
    kb = KnowledgeBase(rag, embedder=embedder)
    kb.open()
    return kb


@pytest.fixture(scope="session")
def quality_kb(tmp_path_factory: pytest.TempPathFactory, default_config: Config, minilm: Any) -> Any:
    """The sample knowledge base (a private copy), indexed once for the session."""
    base = tmp_path_factory.mktemp("quality-kb")
    shutil.copytree(SAMPLE_KB, base / "kb")
    return open_kb(base / "kb", base / "index", default_config, minilm)


@pytest.fixture(scope="session")
def smollm(default_config: Config) -> Any:
    """The embedded chat model (SmolLM2-135M through llama-cpp-python)."""
    from daemon.stages.llm_llamacpp import LlamaCppChatModel

    return LlamaCppChatModel(default_config.llm, own_name=default_config.persona.name)


def make_pipeline(cfg: Config, kb: Any, llm: Any, tts: Any) -> Any:
    """A pipeline over already loaded stages, with memory-only history."""
    from daemon.history import ConversationHistory
    from daemon.pipeline import Pipeline

    history = ConversationHistory(cfg.conversation.max_turns, cfg.conversation.max_tokens)
    return Pipeline(cfg=cfg, llm=llm, tts=tts, history=history, kb=kb)


@pytest.fixture(scope="session")
def quality_pipeline(default_config: Config, quality_kb: Any, smollm: Any, piper_tts: Any) -> Any:
    return make_pipeline(default_config, quality_kb, smollm, piper_tts)


def ask(pipe: Any, question: str) -> TurnResult:
    """One whole turn (retrieval, LLM, TTS into a buffer), as the CLI runs it."""
    from bench.quality import answer
    from daemon.audio.sinks import BufferSink

    result: TurnResult = asyncio.run(answer(pipe, question, BufferSink()))
    return result


@pytest.fixture(scope="session")
def ask_turn() -> Callable[[Any, str], TurnResult]:
    return ask
