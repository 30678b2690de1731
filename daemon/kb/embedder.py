"""Loading the embedding model (llama-index's HuggingFaceEmbedding over sentence-transformers).

Importing torch takes about ten seconds on two cores, so nothing here runs at import time:
:func:`load_embedder` is called the first time a text actually needs a vector.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from daemon.config import RagConfig
from daemon.errors import ModelError
from daemon.models import resolve_model

_LOGGER = logging.getLogger(__name__)

# Texts per embedding call. On 2 cores MiniLM embeds as many chunks a second in batches of 4
# to 32 (about 12 a second building an index, clauses included), but a question asked during
# indexing waits for the call in progress: ~0.3 s for 8 chunks, ~1.6 s for 32.
EMBED_BATCH = 8


def model_dir(cfg: RagConfig) -> Path | None:
    """The local folder of the embedding model (its tokenizer and vocabulary), if there is one."""
    try:
        path = resolve_model(cfg.embedding_model, "embedding model")
    except ModelError:
        return None
    return path if path.is_dir() else path.parent


def load_embedder(cfg: RagConfig) -> Any:
    """A llama-index ``HuggingFaceEmbedding`` for ``cfg.embedding_model`` on ``cfg.device``."""
    path = resolve_model(cfg.embedding_model, "embedding model")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError as exc:
        raise ModelError(
            f"embedding model: llama-index-embeddings-huggingface is not installed ({exc}); run `make setup`"
        ) from None
    _quiet_transformers()
    _LOGGER.info("loading embedding model %s on %s", path, cfg.device)
    try:
        return HuggingFaceEmbedding(
            model_name=str(path), device=cfg.device, embed_batch_size=EMBED_BATCH, normalize=True
        )
    except Exception as exc:  # torch/transformers raise many types for a bad model or device
        hint = " (is a CUDA build of torch installed?)" if cfg.device == "cuda" else ""
        raise ModelError(f"embedding model: cannot load {path} on {cfg.device}{hint}: {exc}") from None


def _quiet_transformers() -> None:
    # The weight-loading progress bar would land on the CLI's stderr next to our own.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - only cosmetics
        pass


@contextmanager
def single_thread() -> Iterator[None]:
    """Run a short embedding on one torch thread.

    A query is a dozen tokens: a second thread gains nothing, and when the other stages (or
    other programs) keep both cores busy, torch's spinning thread pool turned an 8 ms query
    into 400 ms in measurements on 2 cores. Callers hold the embedding lock, so no other torch
    work runs meanwhile. Batches keep torch's default thread count.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
