"""LLM backend: an OpenAI-compatible chat server (vLLM, llama.cpp's server, ...) streamed over SSE.

``llm.engine: openai`` with ``llm.base_url`` (e.g. ``http://127.0.0.1:8000/v1``) and
``llm.model`` (the server's model name). Connection failures are retried with exponential
backoff (``llm.retries``), so a turn that starts while vLLM is still loading waits for it;
past that the turn fails with one clear :class:`ModelError`. Cancelling a turn closes the
HTTP stream, which vLLM (and llama.cpp's server) take as the signal to abort the request.

Phi-3-medium's chat template only renders ``user`` and ``assistant`` turns: a ``system``
message is dropped without a word. With ``llm.system_role: false`` the system text is
therefore folded into the first user turn here (the prompt builder does the same upstream).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import httpx

from daemon.config import LlmConfig
from daemon.errors import ModelError
from daemon.messages import ChatMessage
from daemon.stages.base import ShouldStop, never_stop

_LOGGER = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 4.0
# Failures before any byte of the reply arrived: safe to send the request again.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
_RETRY_STATUS = {502, 503, 504}     # a proxy or vLLM still starting


def served_model_name(cfg: LlmConfig) -> str:
    """The model name to send: ``llm.model`` as written in the config.

    The config loader resolves ``llm.model`` like a path (it is one for the llamacpp engine),
    so a served name such as ``phi-3-medium`` arrives as ``<config dir>/phi-3-medium``; an
    absolute path that does not exist is turned back into its last component.
    """
    name = cfg.model
    if os.path.isabs(name) and not os.path.exists(name):
        return os.path.basename(name.rstrip("/"))
    return name


def fold_system(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """System text moved into the first user turn, for templates without a system role."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return rest
    for i, msg in enumerate(rest):
        if msg.role == "user":
            rest[i] = ChatMessage("user", f"{system}\n\n{msg.content}")
            return rest
    return [ChatMessage("user", system), *rest]


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` payloads of a server-sent-events stream, one per event."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        # other fields (event:, id:, retry:) and comments (":") carry nothing we use
    if data:
        yield "\n".join(data)


class OpenAIChatModel:
    """Implements :class:`daemon.stages.base.ChatModel` against ``/chat/completions``."""

    def __init__(self, cfg: LlmConfig, *, transport: httpx.BaseTransport | None = None) -> None:
        if not cfg.base_url:
            raise ModelError("LLM: llm.base_url is empty; set it to the server's URL, e.g. http://127.0.0.1:8000/v1")
        self.name = served_model_name(cfg)
        self.base_url = cfg.base_url.rstrip("/")
        self._cfg = cfg
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(cfg.timeout_s, connect=min(CONNECT_TIMEOUT_S, cfg.timeout_s))
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self._lock = threading.Lock()        # one generation at a time, like the in-process backend

    def close(self) -> None:
        self._client.close()

    def payload_messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
        chosen = list(messages) if self._cfg.system_role else fold_system(messages)
        return [{"role": m.role, "content": m.content} for m in chosen]

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        should_stop: ShouldStop = never_stop,
    ) -> Iterator[str]:
        payload = {
            "model": self.name, "messages": self.payload_messages(messages), "max_tokens": max_tokens,
            "temperature": temperature, "stream": True,
        }
        with self._lock, self._open(payload, should_stop) as response:
            if response is None:                      # stopped while waiting to connect
                return
            try:
                for data in sse_data(response.iter_lines()):
                    if should_stop() or data.strip() == "[DONE]":
                        break
                    piece = self._piece(data)
                    if piece:
                        yield piece
            except httpx.TimeoutException:
                raise ModelError(f"LLM server at {self.base_url} stopped sending for {self._cfg.timeout_s:g} s "
                                 "(llm.timeout_s); is it overloaded?") from None
            except httpx.HTTPError as exc:
                raise ModelError(f"LLM server at {self.base_url} broke off the reply: {_why(exc)}") from None
        # Leaving the `with` closes the response: on a cancel that drops the connection
        # mid-reply, and vLLM aborts the request when its client goes away.

    def prompt_overflow(self, messages: Sequence[ChatMessage], max_tokens: int) -> int:
        """0: the server knows its own context window and answers a prompt that is too long
        with an error, which :meth:`stream` reports in one line."""
        return 0

    def _piece(self, data: str) -> str:
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise ModelError(f"LLM server at {self.base_url} sent a malformed event: {data[:80]!r}") from None
        if "error" in event:
            raise ModelError(f"LLM server at {self.base_url} failed mid-reply: {_one_line(_error_text(event))}")
        choices = event.get("choices") or [{}]
        return (choices[0].get("delta") or {}).get("content") or ""

    @contextmanager
    def _open(self, payload: dict[str, Any], should_stop: ShouldStop) -> Iterator[httpx.Response | None]:
        """POST with retries on connection failures; yields the open streaming response."""
        delay, attempt = FIRST_BACKOFF_S, 0
        while True:
            try:
                with self._client.stream("POST", "/chat/completions", json=payload) as response:
                    if response.status_code in _RETRY_STATUS and attempt < self._cfg.retries:
                        last: Exception = ModelError(f"HTTP {response.status_code}")
                    else:
                        _raise_for_status(response, self.base_url)
                        yield response
                        return
            except _RETRYABLE as exc:
                last = exc
                if attempt >= self._cfg.retries:
                    raise ModelError(f"LLM server at {self.base_url} is not reachable: {_why(exc)} "
                                     f"(after {attempt + 1} attempts); start it (systemctl --user start "
                                     "sottovoce-llm) or fix llm.base_url") from None
            except httpx.TimeoutException:
                raise ModelError(f"LLM server at {self.base_url} did not answer within {self._cfg.timeout_s:g} s "
                                 "(llm.timeout_s)") from None
            attempt += 1
            _LOGGER.info("LLM server at %s: %s; retry %d/%d in %.2f s", self.base_url, _why(last),
                         attempt, self._cfg.retries, delay)
            if _wait(delay, should_stop):
                yield None
                return
            delay = min(delay * 2, MAX_BACKOFF_S)


def _wait(seconds: float, should_stop: ShouldStop) -> bool:
    """Sleep for the backoff, waking early (True) when the turn is cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if should_stop():
            return True
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return should_stop()


def _why(exc: Exception) -> str:
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(text: str, limit: int = 200) -> str:
    """Server messages can span lines (tracebacks, validation lists): keep one short line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _error_text(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if err:
        return str(err)
    return str(body.get("detail") or body.get("message") or body) if isinstance(body, dict) else str(body)


def _raise_for_status(response: httpx.Response, base_url: str) -> None:
    if response.status_code < 400:
        return
    raw = response.read().decode("utf-8", "replace")
    try:
        text = _one_line(_error_text(json.loads(raw)))
    except json.JSONDecodeError:
        text = _one_line(raw) or response.reason_phrase
    hint = " (check llm.model against the server's --served-model-name)" if response.status_code == 404 else ""
    raise ModelError(f"LLM server at {base_url} refused the request: HTTP {response.status_code}: {text}{hint}")
