"""LLM backend: a GGUF model in-process through llama-cpp-python, streamed token by token."""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator, Sequence

from daemon.config import LlmConfig
from daemon.errors import ModelError
from daemon.messages import ChatMessage
from daemon.models import resolve_model
from daemon.stages.base import ShouldStop, never_stop
from daemon.stages.copy_bias import NoteCopyBias
from daemon.stages.echo_guard import EchoGuard, piece_key
from daemon.stages.prompt import grounding_note
from daemon.stages.wrap_up import SentenceWrapUp

_LOGGER = logging.getLogger(__name__)
_TEMPLATE_TOKENS = 8   # per message, for the chat template's role markers (an upper bound)


class LlamaCppChatModel:
    """Implements :class:`daemon.stages.base.ChatModel` with llama_cpp.Llama."""

    def __init__(self, cfg: LlmConfig, own_name: str = "") -> None:
        """``own_name``: the assistant's name, which a chat reply may say although the system
        message holds it (see :meth:`_echo_guard`)."""
        path = resolve_model(cfg.model, "LLM model")
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - install problem
            raise ModelError(f"LLM: llama-cpp-python is not installed ({exc}); run `make setup`") from None
        try:
            self._llm = Llama(
                model_path=str(path), n_ctx=cfg.n_ctx, n_threads=cfg.threads, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"LLM model {path} failed to load: {exc}") from None
        self.name = path.name
        self._cfg = cfg
        self._persona_name = own_name.strip()
        self._texts: dict[int, str] = {}  # token id -> its text, for the wrap-up and echo guard
        self._by_key: dict[str, list[int]] | None = None   # piece key -> token ids (echo guard)
        self._lock = threading.Lock()   # one generation at a time
        _LOGGER.info("LLM loaded: %s", path)

    def _copy_bias(self, note: str) -> list[NoteCopyBias] | None:
        """A fresh copy-bias processor for a grounded reply; None for chat or when it is off.
        (The repeat penalty counts the prompt's last 64 tokens, the note among them, so it
        works against copying: grounded replies use ``grounded_repeat_penalty``.)"""
        cfg = self._cfg
        if not note or (cfg.copy_bias <= 0 and cfg.copy_follow_bias <= 0):
            return None
        tokens = self._llm.tokenize((" " + note).encode("utf-8"), add_bos=False)
        return [NoteCopyBias(tokens, bias=cfg.copy_bias, follow_bias=cfg.copy_follow_bias,
                             end_token=self._llm.token_eos())]

    def _echo_guard(self, messages: Sequence[ChatMessage]) -> list[EchoGuard] | None:
        """A fresh echo guard for a chat reply (daemon/stages/echo_guard.py): it may not recite
        the system message. None when it is off or the prompt has no system message."""
        if not self._cfg.echo_guard or not messages or messages[0].role != "system":
            return None
        parts = messages[0].content.split(self._persona_name) if self._persona_name else [messages[0].content]
        segments = [[self._key_of(t) for t in self._llm.tokenize((" " + p.strip()).encode("utf-8"), add_bos=False)]
                    for p in parts if p.strip()]
        by_key = self._tokens_by_key()
        return [EchoGuard(segments, key_of=self._key_of, tokens_with=lambda key: by_key.get(key, ()))]

    def _key_of(self, token: int) -> str:
        return piece_key(self._token_text(token))

    def _tokens_by_key(self) -> dict[str, list[int]]:
        """Every vocabulary token by its piece key, built at the first chat prompt (the
        pipeline's warm-up runs one) and kept: ~0.1 s for SmolLM2's 49k tokens."""
        if self._by_key is None:
            by_key: dict[str, list[int]] = {}
            for token in range(self._llm.n_vocab()):
                key = self._key_of(token)
                if key:
                    by_key.setdefault(key, []).append(token)
            self._by_key = by_key
        return self._by_key

    def _wrap_up(self) -> list[SentenceWrapUp]:
        """A fresh wrap-up processor (daemon/stages/wrap_up.py); empty when it is off."""
        if self._cfg.wrap_up_tokens <= 0:
            return []
        return [SentenceWrapUp(after=self._cfg.wrap_up_tokens, end_token=self._llm.token_eos(),
                               text_of=self._token_text)]

    def _processors(self, note: str, messages: Sequence[ChatMessage]) -> list[Any] | None:
        """This reply's logits processors: the copy bias (grounded) or the echo guard (chat),
        then the wrap-up; None when all are off."""
        shaping = self._copy_bias(note) if note else self._echo_guard(messages)
        return [*(shaping or []), *self._wrap_up()] or None

    def _token_text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self._llm.detokenize([token]).decode("utf-8", errors="ignore")
        return text

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """The chat prompt's length in tokens, never less than what the chat template makes of
        it: each message's text plus room for its role markers (ChatML, Llama 3 and Phi-3 use
        4-5 tokens a message), and the assistant header the reply starts after."""
        return sum(self.count_tokens(m.content) + _TEMPLATE_TOKENS for m in messages) + _TEMPLATE_TOKENS

    def prompt_overflow(self, messages: Sequence[ChatMessage], max_tokens: int) -> int:
        return max(0, self.prompt_tokens(messages) + max_tokens - self._llm.n_ctx())

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        should_stop: ShouldStop = never_stop,
    ) -> Iterator[str]:
        payload = [{"role": m.role, "content": m.content} for m in messages]
        note = grounding_note(messages)
        with self._lock:
            chunks = self._llm.create_chat_completion(
                payload, max_tokens=max_tokens, temperature=temperature, top_p=0.9, stream=True,
                repeat_penalty=self._cfg.grounded_repeat_penalty if note else self._cfg.repeat_penalty,
                logits_processor=self._processors(note, messages),
            )
            try:
                for chunk in chunks:
                    if should_stop():
                        break
                    piece = chunk["choices"][0].get("delta", {}).get("content")
                    if piece:
                        yield piece
            finally:
                close = getattr(chunks, "close", None)
                if close:
                    close()   # ends generation inside llama.cpp at once
