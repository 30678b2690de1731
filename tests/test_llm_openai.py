"""The OpenAI-compatible client against a real llama.cpp server (SmolLM2) started by the tests."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from daemon.config import LlmConfig
from daemon.errors import ModelError
from daemon.messages import ChatMessage
from daemon.stages.llm_openai import OpenAIChatModel, fold_system, sse_data
from tests.fixtures_gpu import LlamaServer, free_port

QUESTION = [ChatMessage("system", "You are a helpful assistant."),
            ChatMessage("user", "Name three colours of the rainbow.")]
STORY = [ChatMessage("user", "Write a very long story about a lighthouse keeper and the sea, with many chapters.")]


def _client(base_url: str, **changes) -> OpenAIChatModel:
    cfg = dataclasses.replace(LlmConfig(engine="openai", model="smollm2", base_url=base_url,
                                        timeout_s=30.0, retries=2), **changes)
    return OpenAIChatModel(cfg)


def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_streams_a_reply_piece_by_piece(llama_server: LlamaServer):
    llm = _client(llama_server.base_url)
    pieces = list(llm.stream(QUESTION, max_tokens=16, temperature=0.0))
    assert len(pieces) > 3                       # streamed, not one block
    assert "".join(pieces).strip()
    assert "".join(llm.stream(QUESTION, max_tokens=8, temperature=0.0)).strip()   # the pooled connection is reused


def test_cancelling_mid_stream_makes_the_server_abort(llama_server: LlamaServer):
    llm = _client(llama_server.base_url)
    log_before = llama_server.log_path.read_text(errors="replace").count("disconnected")
    got: list[str] = []
    for piece in llm.stream(STORY, max_tokens=1500, temperature=0.7, should_stop=lambda: len(got) >= 3):
        got.append(piece)
    assert len(got) == 3
    # llama.cpp's server notes the dropped connection and stops generating (it was started
    # with --interrupt_requests False, so only the disconnect can stop it).
    assert _wait_for(lambda: llama_server.log_path.read_text(errors="replace").count("disconnected")
                     > log_before, 20.0)
    assert "".join(llm.stream(QUESTION, max_tokens=8, temperature=0.0)).strip()


def test_server_down_is_one_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"          # nothing listens there
    llm = _client(url, retries=2)
    with pytest.raises(ModelError) as err:
        list(llm.stream(QUESTION, max_tokens=8, temperature=0.0))
    message = str(err.value)
    assert message.startswith(f"LLM server at {url} is not reachable:")
    assert "\n" not in message and "after 3 attempts" in message


def test_cancel_while_waiting_for_the_server():
    llm = _client(f"http://127.0.0.1:{free_port()}/v1", retries=20)
    calls = []
    assert list(llm.stream(QUESTION, max_tokens=8, temperature=0.0,
                           should_stop=lambda: calls.append(1) or len(calls) > 3)) == []


def test_a_refused_request_is_reported(llama_server: LlamaServer):
    llm = _client(llama_server.base_url)
    with pytest.raises(ModelError, match=r"refused the request: HTTP [45]\d\d: .+") as err:
        list(llm.stream([ChatMessage("narrator", "Hello")], max_tokens=8, temperature=0.0))
    assert "\n" not in str(err.value)


def test_system_prompt_folding():
    folded = fold_system(QUESTION)
    assert [m.role for m in folded] == ["user"]
    assert folded[0].content == "You are a helpful assistant.\n\nName three colours of the rainbow."
    llm = _client("http://127.0.0.1:1/v1", system_role=False)
    assert llm.payload_messages(QUESTION) == [{"role": "user", "content": folded[0].content}]
    assert _client("http://127.0.0.1:1/v1").payload_messages(QUESTION)[0]["role"] == "system"
    assert list(sse_data(["data: {\"a\":", "data: 1}", "", ": comment", "data: [DONE]", ""])) == \
        ['{"a":\n1}', "[DONE]"]


def test_server_restart_is_survived(llama_server: LlamaServer):
    llm = _client(llama_server.base_url, retries=0)
    assert "".join(llm.stream(QUESTION, max_tokens=8, temperature=0.0)).strip()
    llama_server.stop()
    with pytest.raises(ModelError, match="is not reachable"):
        list(llm.stream(QUESTION, max_tokens=8, temperature=0.0))
    # Restart in the background; a client retrying with backoff waits for it to come up.
    restart = threading.Thread(target=llama_server.start, daemon=True)
    restart.start()
    patient = _client(llama_server.base_url, retries=10)
    assert "".join(patient.stream(QUESTION, max_tokens=8, temperature=0.0)).strip()
    restart.join(timeout=60)
    assert "".join(llm.stream(QUESTION, max_tokens=8, temperature=0.0)).strip()   # old pool recovers
