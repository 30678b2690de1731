"""The index on disk: a restart loads without re-embedding, only changed files are embedded,
a damaged or outdated index is rebuilt with a warning, and a process killed in the middle of
writing the index leaves the last good one loadable."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.config import PROJECT_ROOT
from tests.fixtures_kb import CountingEmbedder, HashEmbedder, top_source

QUESTION = "What does error E7 mean on my kettle?"


def _gen_dir(kb: Any) -> Path:
    manifest = json.loads((kb.index_dir / "manifest.json").read_text())
    return kb.index_dir / manifest["generation"]


def test_restart_loads_without_re_embedding(make_kb: Any, kb_folder: Path, minilm: Any) -> None:
    first = make_kb(kb_folder)
    first.open()
    assert len(first._embedder.chunks(first)) == first.status()["chunks"] == 8

    second = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    second.open()
    assert second._embedder.count == 0
    assert second.status()["documents"] == 3 and second.status()["last_indexed"] > 0
    assert top_source(second, QUESTION) == "zephyr_kettle_manual.txt"
    assert "Skerrimore" in second.hotwords_for(None, 30)
    # The sentences context selection scores were embedded at indexing time and kept too.
    notes = second.select_context(QUESTION, second.retrieve(QUESTION), 1)
    assert notes and "E7" in notes[0].text and second._embedder.count == 0

    # One file changed while the service was down: only its new text is embedded.
    md = kb_folder / "skerrimore_lighthouse.md"
    md.write_text(md.read_text(encoding="utf-8").replace("212 steps", "213 steps"), encoding="utf-8")
    (kb_folder / "quillfeather_bakery_handbook.pdf").unlink()
    third = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    third.open()
    assert third._embedder.chunks(third) == third._embedder.texts[:1] and "213 steps" in third._embedder.texts[0]
    assert third.status()["documents"] == 2


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(folder)): (f.stat().st_mtime_ns, f.stat().st_size)
            for f in sorted(folder.rglob("*")) if f.is_file()}


def test_a_reader_never_writes_the_index(make_kb: Any, kb_folder: Path, minilm: Any) -> None:
    """`kb search` beside the running service reads the service's index (persist=False): a
    file the index lacks is embedded in memory and found, and nothing on disk changes, even
    when its settings differ from the index's (which a writer would rebuild and replace)."""
    owner = make_kb(kb_folder)
    owner.open()
    before = _files(owner.index_dir)
    (kb_folder / "tidewater_ferry.txt").write_text(
        "The Tidewater ferry to Hallow Island leaves at 7:40 from pier 9.\n", encoding="utf-8")
    reader = make_kb(kb_folder, embedder=CountingEmbedder(minilm), persist=False)
    reader.open()
    assert reader._embedder.chunks(reader) and top_source(reader, "When does the Tidewater ferry leave?") == "tidewater_ferry.txt"
    reader.flush()
    other = make_kb(kb_folder, embedder=CountingEmbedder(minilm), persist=False, chunk_size=64)
    other.open()
    other.flush()
    assert other.status()["documents"] == 4
    assert _files(owner.index_dir) == before


def test_an_index_folder_that_cannot_be_written(make_kb: Any, kb_folder: Path, minilm: Any, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """An index folder this process cannot write (root's after a `sudo`, a read-only mount;
    simulated with a lock that is a folder, which stops root too) is still read, and changes
    stay in memory with one clear line; an index_dir that is a file is indexed in memory."""
    first = make_kb(kb_folder)
    first.open()
    first.stop()
    (first.index_dir / "lock").unlink()
    (first.index_dir / "lock").mkdir()
    caplog.set_level(logging.WARNING, logger="daemon.kb")
    second = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    second.open()
    assert second._embedder.count == 0 and second.status()["documents"] == 3     # read without the lock
    (kb_folder / "otters.md").write_text("# Otters\n\nThe weir has 14 otters.\n", encoding="utf-8")
    (kb_folder / "voles.md").write_text("# Voles\n\nThe bank has 9 voles.\n", encoding="utf-8")
    second.apply_changes([], [kb_folder / "otters.md"])
    second.apply_changes([], [kb_folder / "voles.md"])
    assert top_source(second, "How many otters live at the weir?") == "otters.md"
    saves = [r for r in caplog.records if "cannot save the index" in r.getMessage()]
    assert len(saves) == 1 and "rag.index_dir" in saves[0].getMessage()        # said once, not per change

    not_a_folder = tmp_path / "index-is-a-file"
    not_a_folder.write_text("oops", encoding="utf-8")
    third = make_kb(kb_folder, index_dir=str(not_a_folder))
    third.open()
    assert third.status()["documents"] == 5
    assert top_source(third, QUESTION) == "zephyr_kettle_manual.txt"


@pytest.mark.parametrize("damage", ["truncate vectors", "garble records", "garble manifest", "old format",
                                    "other model", "missing generation"])
def test_damaged_or_outdated_index_is_rebuilt_with_a_warning(
        make_kb: Any, kb_folder: Path, minilm: Any, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    first = make_kb(kb_folder)
    first.open()
    gen = _gen_dir(first)
    manifest_path = first.index_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "truncate vectors":
        data = (gen / "vectors.npy").read_bytes()
        (gen / "vectors.npy").write_bytes(data[: len(data) // 2])
    elif damage == "garble records":
        (gen / "records.json").write_text("{not json", encoding="utf-8")
    elif damage == "garble manifest":
        manifest_path.write_bytes(b"\x00\x01garbage")
    elif damage == "old format":
        manifest["format"] = 1
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "other model":
        manifest["stamp"]["model"] = "package:some-other-model"
        manifest_path.write_text(json.dumps(manifest))
    else:
        for child in gen.iterdir():
            child.unlink()
        gen.rmdir()
    second = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    with caplog.at_level(logging.WARNING, logger="daemon.kb"):
        second.open()
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert len(second._embedder.chunks(second)) == 8       # everything embedded again
    assert top_source(second, QUESTION) == "zephyr_kettle_manual.txt"
    third = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    third.open()                                           # and the rebuilt index is good on disk
    assert third._embedder.count == 0


def _start_writer(folder: Path, index_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.fixtures_kb", "writer", str(folder), str(index_dir)],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True)


def _kill_mid_write(proc: subprocess.Popen[str], index_root: Path, timeout: float = 60.0) -> bool:
    """SIGKILL the writer while a save is in progress (a temporary generation exists)."""
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    deadline = time.monotonic() + timeout
    caught = False
    while time.monotonic() < deadline and not caught:
        for sub in index_root.glob("*/tmp-gen-*"):
            if sub.exists():
                caught = True
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return caught


def test_kill_during_index_write_leaves_a_loadable_index(tmp_path: Path, kb_rag_config: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from daemon.kb import KnowledgeBase

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        (folder / f"doc_{i:03d}.txt").write_text(
            f"Ledger {i}\n\nEntry {i} records that crate {i * 7} of apples left dock {i % 13}.\n" * 3)
    index_root = tmp_path / "index"
    cfg = dataclasses.replace(kb_rag_config, knowledge_base=str(folder), index_dir=str(index_root))
    for attempt in range(3):
        proc = _start_writer(folder, index_root)
        try:
            caught = _kill_mid_write(proc, index_root)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert caught, "the writer never got to write the index"
        assert list(index_root.glob("*/tmp-gen-*")), "the kill did not land during a write"
        embedder = CountingEmbedder(HashEmbedder())
        kb = KnowledgeBase(cfg, embedder=embedder)
        with caplog.at_level(logging.WARNING, logger="daemon.kb"):
            kb.open()
        assert not [r for r in caplog.records if "unusable" in r.getMessage()], caplog.text
        status = kb.status()
        assert status["documents"] == 300 and not status["failed"]
        assert len(embedder.chunks(kb)) <= 2, embedder.texts  # at most the file being rewritten
        assert kb.retrieve("crate 700 of apples")[0].source == "doc_100.txt"
        assert not list(index_root.glob("*/tmp-gen-*"))   # leftovers cleaned by the next save


def test_an_unreadable_sentence_cache_is_recomputed(make_kb: Any, kb_folder: Path, minilm: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    first = make_kb(kb_folder)
    first.open()
    expected = first.select_context(QUESTION, first.retrieve(QUESTION), 1)
    (first.index_dir / "clauses.npz").write_bytes(b"PK\x03\x04 not a zip")
    second = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    with caplog.at_level(logging.WARNING, logger="daemon.kb"):
        second.open()
    assert any("clauses.npz" in r.getMessage() for r in caplog.records)
    assert second._embedder.count > 0 and not second._embedder.chunks(second)   # sentences only
    assert second.select_context(QUESTION, second.retrieve(QUESTION), 1) == expected
    third = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    third.open()
    third.select_context(QUESTION, third.retrieve(QUESTION), 1)
    assert third._embedder.count == 0                      # rewritten whole
