"""A large file arriving in a live knowledge base: it is embedded a batch at a time, questions
go between two batches, a file deleted or changed meanwhile is dropped at the next batch,
stop() does not wait for the batch in progress, and the tokenizer never gets the whole text.

The embedder is the real MiniLM, wrapped so that a test can catch an indexing batch in the
middle (:class:`tests.fixtures_kb.HeldEmbedder`) and see the order of every call: what the
tests count is batches and texts, never seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from daemon.kb import progress
from daemon.kb.embedder import EMBED_BATCH
from daemon.kb.loaders import LoadedDocument, Section, load_document
from tests.fixtures_kb import CountingEmbedder, HeldEmbedder, UpdateWaiter, filler_text, top_source

BIG = 200_000                 # characters: about 160 chunks, twenty embedding batches
QUESTION = "How tall is Skerrimore lighthouse?"
OTTERS = "The otter colony at Brannock Weir has {n} otters and a heron called Pim.\n"
OTTER_QUESTION = "How many otters live at Brannock Weir?"
DEADLINE_S = 120.0            # liveness only: how long before a test gives up waiting


def _watched(make_kb: Any, folder: Path, embedder: HeldEmbedder) -> tuple[Any, UpdateWaiter]:
    kb = make_kb(folder, embedder=embedder, debounce_ms=100)
    kb.open()
    waiter = UpdateWaiter()
    kb.start_watching(waiter)
    return kb, waiter


def _until(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _chunk_texts(kb: Any, name: str, text: str) -> set[str]:
    """What the knowledge base embeds for a file ``name`` holding ``text``."""
    doc = load_document(Path(name), text.encode("utf-8"))
    return {d.embed_text for d in kb._file_indexer().chunker.chunk(name, doc)}


def _embedded(events: list[tuple[str, list[str]]], among: set[str]) -> list[str]:
    return [t for kind, texts in events if kind == "batch" for t in texts if t in among]


def _sources(kb: Any) -> set[str]:
    with kb._lock:
        return {c.source for c in kb._state.chunks.values()}


def _questions_waiting(kb: Any) -> int:
    return int(getattr(getattr(kb, "_gate", None), "questions_waiting", 0))


def _drop_big_file(kb_folder: Path, embedder: HeldEmbedder, text: str) -> Path:
    """Write the large file and return once its first embedding batch is caught mid-way."""
    big = kb_folder / "big.txt"
    embedder.hold_next_batch()
    big.write_text(text, encoding="utf-8")
    assert embedder.held.wait(DEADLINE_S), "the large file's embedding never started"
    return big


def test_a_question_waits_for_one_batch_at_most_while_a_large_file_is_embedded(
        make_kb: Any, kb_folder: Path, minilm: Any, monkeypatch: Any, caplog: Any) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)     # a progress line after every batch
    monkeypatch.setattr(progress, "LARGE_CHUNKS", 1)
    caplog.set_level(logging.INFO, logger="daemon.kb")
    embedder = HeldEmbedder(minilm)
    kb, _ = _watched(make_kb, kb_folder, embedder)
    _drop_big_file(kb_folder, embedder, filler_text(BIG))
    indexing = kb.status().get("indexing", "")           # while the first batch is in progress

    answers: list[str] = []
    embedder.mark("asked")
    asking = threading.Thread(target=lambda: answers.append(top_source(kb, QUESTION)), name="question")
    asking.start()
    _until(lambda: _questions_waiting(kb) > 0, 20)       # the question waits for the model...
    embedder.release.set()                                # ...and the batch in progress ends
    asking.join(DEADLINE_S)
    assert answers == ["skerrimore_lighthouse.md"]

    after = embedder.since("asked")
    served = after.index(("query", [QUESTION]))
    before_answer = sum(len(texts) for kind, texts in after[:served] if kind == "batch")
    assert before_answer <= EMBED_BATCH, f"the question waited for {before_answer} chunks to be embedded"
    # Indexing goes on afterwards, a batch at a time, and says where it is.
    assert _until(lambda: any(kind == "batch" for kind, _ in embedder.since("asked")[served + 1:]))
    assert max(len(texts) for kind, texts in embedder.events if kind == "batch") <= EMBED_BATCH
    assert indexing.startswith("file 1 of 1: big.txt, 0 of "), indexing
    assert indexing.endswith(" chunks embedded"), indexing
    assert "knowledge base: embedding big.txt: " in caplog.text
    assert f"embedding big.txt: {EMBED_BATCH}/" in caplog.text


def test_the_progress_listener_hears_each_step_of_a_large_file(
        make_kb: Any, kb_folder: Path, minilm: Any, monkeypatch: Any) -> None:
    """What the service announces as the KnowledgeBase property's ``indexing`` while it runs."""
    monkeypatch.setattr(progress, "NOTIFY_EVERY_S", 0.0)
    embedder = HeldEmbedder(minilm)
    kb = make_kb(kb_folder, embedder=embedder, debounce_ms=100)
    kb.open()
    heard: list[str] = []
    waiter = UpdateWaiter()
    kb.start_watching(waiter, lambda: heard.append(kb.status()["indexing"]))
    _drop_big_file(kb_folder, embedder, filler_text(BIG))
    assert any(line.startswith("file 1 of 1: big.txt, 0 of ") for line in heard), heard
    embedder.release.set()
    waiter.wait_for(lambda: "big.txt" in _sources(kb) and kb.status()["indexing"] == "", timeout=DEADLINE_S)
    assert _until(lambda: heard[-1:] == [""], 10), heard[-3:]
    assert any(f", {EMBED_BATCH} of " in line for line in heard), heard
    kb.stop()
    count = len(heard)
    (kb_folder / "otters.txt").write_text(OTTERS.format(n=3), encoding="utf-8")
    kb.sync_path(kb_folder / "otters.txt")       # indexed after stop(): nobody is told
    assert len(heard) == count


def test_the_progress_listener_is_told_at_most_once_a_second_but_always_of_start_and_end() -> None:
    seen: list[str] = []
    prog = progress.IndexingProgress()

    def listener() -> None:
        seen.append(prog.describe())
        raise RuntimeError("a listener that fails does not stop the indexing")

    prog.listen(listener)
    prog.begin(2)
    prog.preparing("a.txt")
    prog.embedding(["a.txt"], 100)
    prog.embedded(8)
    prog.files_done(1)
    prog.end()
    prog.end()                                    # idle already: nothing new to tell
    assert seen == ["file 1 of 2", ""]


def test_a_file_deleted_while_it_is_embedded_is_dropped_at_the_next_batch(
        make_kb: Any, kb_folder: Path, minilm: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="daemon.kb")
    embedder = HeldEmbedder(minilm)
    kb, waiter = _watched(make_kb, kb_folder, embedder)
    text = filler_text(BIG)
    big = _drop_big_file(kb_folder, embedder, text)

    big.unlink()
    embedder.mark("deleted")
    # Indexed only once the watcher is done with the large file: the end of the story.
    (kb_folder / "otters.txt").write_text(OTTERS.format(n=12), encoding="utf-8")
    embedder.release.set()
    waiter.wait_for(lambda: top_source(kb, OTTER_QUESTION) == "otters.txt", timeout=DEADLINE_S)

    late = _embedded(embedder.since("deleted"), _chunk_texts(kb, "big.txt", text))
    assert len(late) <= EMBED_BATCH, f"{len(late)} chunks of the deleted file were embedded after it was gone"
    assert "big.txt" not in _sources(kb)
    status = kb.status()
    assert status["documents"] == 4 and status["failed"] == {} and status["indexing"] == ""
    assert "big.txt went away while it was being indexed" in caplog.text
    assert "knowledge base: indexed otters.txt: 1 chunk" in caplog.text


def test_a_file_changed_while_it_is_embedded_is_indexed_as_it_is_now(
        make_kb: Any, kb_folder: Path, minilm: Any) -> None:
    embedder = HeldEmbedder(minilm)
    kb, waiter = _watched(make_kb, kb_folder, embedder)
    first = filler_text(BIG)
    big = _drop_big_file(kb_folder, embedder, first)

    big.write_text(OTTERS.format(n=31), encoding="utf-8")
    embedder.mark("changed")
    embedder.release.set()
    waiter.wait_for(lambda: top_source(kb, OTTER_QUESTION) == "big.txt", timeout=DEADLINE_S)

    assert "31 otters" in kb.retrieve(OTTER_QUESTION)[0].text
    late = _embedded(embedder.since("changed"), _chunk_texts(kb, "big.txt", first))
    assert len(late) <= EMBED_BATCH, f"{len(late)} chunks of the old version were embedded after the change"
    with kb._lock:
        assert [c.text for c in kb._state.chunks.values() if c.source == "big.txt"] == [OTTERS.format(n=31).strip()]


def test_stop_returns_while_a_batch_is_still_being_embedded(make_kb: Any, kb_folder: Path, minilm: Any) -> None:
    embedder = HeldEmbedder(minilm)
    kb, _ = _watched(make_kb, kb_folder, embedder)
    worker = kb._watcher._thread
    big = _drop_big_file(kb_folder, embedder, filler_text(BIG))

    embedder.mark("stopping")
    stopper = threading.Thread(target=kb.stop, name="stopper")
    stopper.start()
    stopper.join(60)
    returned_mid_batch = not stopper.is_alive() and not embedder.finished.is_set()
    embedder.release.set()
    stopper.join(DEADLINE_S)
    assert returned_mid_batch, "stop() waited for the batch in progress"

    worker.join(DEADLINE_S)                       # the worker gives up at its next step
    assert not worker.is_alive()
    assert [kind for kind, _ in embedder.since("stopping")] == ["batch"]     # only the one caught
    # What is on disk is a whole index: a new knowledge base loads it and embeds nothing.
    big.unlink()
    fresh = make_kb(kb_folder)
    fresh.open()
    assert fresh._embedder.count == 0
    assert fresh.status()["documents"] == 3 and "big.txt" not in fresh.status()["failed"]


def test_a_large_file_stopped_half_way_is_not_embedded_again_from_its_start(
        make_kb: Any, kb_folder: Path, minilm: Any) -> None:
    """A restart in the middle of a large file (the service stopped, the machine shut down)
    keeps the batches embedded so far: the next start embeds only the rest."""
    embedder = HeldEmbedder(minilm)
    kb, _ = _watched(make_kb, kb_folder, embedder)
    worker = kb._watcher._thread
    embedder.mark("big")
    (kb_folder / "big.txt").write_text(filler_text(BIG), encoding="utf-8")
    assert _until(lambda: len(embedder.since("big")) >= 6), "the large file's embedding never went on"
    embedder.hold_next_batch()
    assert embedder.held.wait(DEADLINE_S)
    done = [text for kind, texts in embedder.since("big") if kind == "batch" for text in texts]
    kb.stop()
    embedder.release.set()
    worker.join(DEADLINE_S)
    assert not worker.is_alive() and len(done) >= 5 * EMBED_BATCH

    fresh = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    fresh.open()
    big_chunks = {c.embed_text for c in fresh._state.chunks.values() if c.source == "big.txt"}
    again = [text for text in fresh._embedder.chunks(fresh) if text in big_chunks]
    assert fresh.status()["documents"] == 4 and len(big_chunks) > len(done)
    assert len(again) <= len(big_chunks) - len(set(done) & big_chunks), (len(again), len(big_chunks), len(done))
    assert set(again).isdisjoint(done)
    # Once the index holding them is saved, the kept vectors are let go.
    assert not (fresh.index_dir / "pending.npz").exists()


def test_a_long_section_reaches_the_tokenizer_in_bounded_pieces(make_kb: Any, kb_folder: Path) -> None:
    """The tokenizer holds the GIL for a whole call (a 19 MB text: ten seconds in which the
    service's event loop and audio callbacks stood still); it must only see pieces."""
    chunker = make_kb(kb_folder)._file_indexer().chunker
    make_tokenizer = chunker._make_tokenizer
    lengths: list[int] = []

    def counting() -> Callable[[str], list[Any]]:
        tokenize = make_tokenizer()
        return lambda text: lengths.append(len(text)) or tokenize(text)

    chunker._make_tokenizer = counting
    text = filler_text(1_000_000, seed=7)
    drafts = chunker.chunk("long.txt", LoadedDocument("", (Section("", text),)))

    assert max(lengths) <= 50_000, f"the tokenizer was given {max(lengths)} characters at once"
    assert len(drafts) > 500
    chunked = " ".join(" ".join(d.text for d in drafts).split())
    for paragraph in text.split("\n\n")[::97]:           # every part of the text is in a chunk
        first = " ".join(paragraph.split(". ")[0].split())
        assert first in chunked, first
