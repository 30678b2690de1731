"""Live reindexing through the real inotify watcher: create, modify, move, delete, editor
temporaries, bursts, and the folder itself deleted and recreated. Each step waits for the
watcher's on_update events (with a deadline) until search reflects the change."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.fixtures_dbus import SOTTOVOCE
from tests.fixtures_kb import SAMPLE_KB, UpdateWaiter, top_source

OTTERS = "# River otters\n\nThe otter colony at Brannock Weir has {n} otters and a heron called Pim.\n"
QUESTION = "How many otters live at Brannock Weir?"


def _watched(make_kb: Any, folder: Path) -> tuple[Any, UpdateWaiter]:
    kb = make_kb(folder, debounce_ms=100)
    kb.open()
    waiter = UpdateWaiter()
    kb.start_watching(waiter)
    return kb, waiter


def _sources(kb: Any) -> set[str]:
    with kb._lock:
        return {c.source for c in kb._state.chunks.values()}


def test_create_modify_move_delete(make_kb: Any, kb_folder: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="daemon.kb")
    kb, waiter = _watched(make_kb, kb_folder)
    embedder = kb._embedder
    assert top_source(kb, QUESTION) != "otters.md"

    (kb_folder / "otters.md").write_text(OTTERS.format(n=14), encoding="utf-8")
    waiter.wait_for(lambda: top_source(kb, QUESTION) == "otters.md")
    assert "14 otters" in kb.retrieve(QUESTION)[0].text

    (kb_folder / "otters.md").write_text(OTTERS.format(n=22), encoding="utf-8")
    waiter.wait_for(lambda: "22 otters" in kb.retrieve(QUESTION)[0].text)
    assert kb.status()["chunks"] == 9                      # the old chunk was replaced, not added

    kb.flush()        # the save after an update also computes the new sentences' vectors
    before = embedder.count
    (kb_folder / "wildlife").mkdir()
    os.replace(kb_folder / "otters.md", kb_folder / "wildlife" / "otters.md")
    waiter.wait_for(lambda: top_source(kb, QUESTION) == "wildlife/otters.md")
    assert embedder.count == before                        # a move re-embeds nothing
    assert "otters.md" not in _sources(kb)

    (kb_folder / "wildlife" / "otters.md").unlink()
    waiter.wait_for(lambda: kb.status()["documents"] == 3)
    assert not any("otters" in s for s in _sources(kb))
    # Said in the log (inotify reports the move into a new folder as a move or a delete + create).
    assert ("knowledge base: otters.md is now wildlife/otters.md" in caplog.text
            or "knowledge base: removed otters.md\n" in caplog.text)
    assert "knowledge base: removed wildlife/otters.md" in caplog.text
    assert top_source(kb, "How tall is Skerrimore lighthouse?") == "skerrimore_lighthouse.md"


def test_only_the_changed_file_is_embedded(make_kb: Any, kb_folder: Path) -> None:
    kb, waiter = _watched(make_kb, kb_folder)
    embedder = kb._embedder
    before = len(embedder.texts)
    kettle = kb_folder / "zephyr_kettle_manual.txt"
    kettle.write_text(kettle.read_text(encoding="utf-8").replace("3 years", "5 years"), encoding="utf-8")
    waiter.wait_for(lambda: "5 years" in kb.retrieve("How long is the kettle warranty?")[0].text)
    new = embedder.texts[before:]
    assert len(new) == 1 and "5 years" in new[0]           # one changed chunk; its neighbours reused


def test_editor_temporaries_and_hidden_files_are_ignored(make_kb: Any, kb_folder: Path) -> None:
    kb, waiter = _watched(make_kb, kb_folder)
    (kb_folder / ".otters.md.swp").write_bytes(b"b0VIM 8.2" + bytes(100))
    (kb_folder / "otters.md~").write_text(OTTERS.format(n=1), encoding="utf-8")
    (kb_folder / "#otters.md#").write_text(OTTERS.format(n=2), encoding="utf-8")
    (kb_folder / ".hidden").mkdir()
    (kb_folder / ".hidden" / "secret.md").write_text(OTTERS.format(n=3), encoding="utf-8")
    # gedit-style save: write a hidden temporary, then rename it over the real name.
    (kb_folder / ".goutputstream-ABC123").write_text(OTTERS.format(n=7), encoding="utf-8")
    os.replace(kb_folder / ".goutputstream-ABC123", kb_folder / "otters.md")
    waiter.wait_for(lambda: "otters.md" in _sources(kb))
    assert _sources(kb) == {"otters.md", "skerrimore_lighthouse.md", "zephyr_kettle_manual.txt",
                            "quillfeather_bakery_handbook.pdf"}
    assert "7 otters" in kb.retrieve(QUESTION)[0].text
    assert not kb.status()["failed"]


def test_a_file_name_that_is_not_utf8_arriving_live(make_kb: Any, kb_folder: Path) -> None:
    kb, waiter = _watched(make_kb, kb_folder)
    bad = kb_folder / os.fsdecode(b"canal\xffnotes.txt")
    bad.write_text(OTTERS.format(n=5), encoding="utf-8")
    (kb_folder / "otters.md").write_text(OTTERS.format(n=6), encoding="utf-8")   # the same batch
    waiter.wait_for(lambda: "otters.md" in _sources(kb))
    assert "not valid UTF-8" in kb.status()["failed"]["canal\ufffdnotes.txt"]
    assert "6 otters" in kb.retrieve(QUESTION)[0].text
    bad.unlink()
    (kb_folder / "otters.md").write_text(OTTERS.format(n=7), encoding="utf-8")
    waiter.wait_for(lambda: "7 otters" in kb.retrieve(QUESTION)[0].text)
    assert kb.status()["failed"] == {}


def test_a_burst_of_writes_is_debounced(make_kb: Any, kb_folder: Path) -> None:
    kb, waiter = _watched(make_kb, kb_folder)
    target = kb_folder / "otters.md"
    for n in range(30):
        target.write_text(OTTERS.format(n=n), encoding="utf-8")
    waiter.wait_for(lambda: "29 otters" in kb.retrieve(QUESTION)[0].text)
    assert len(waiter.updates) < 30
    assert kb.status()["chunks"] == 9


def _saved_generation(kb: Any) -> str:
    manifest = kb.index_dir / "manifest.json"
    return json.loads(manifest.read_text())["generation"] if manifest.exists() else ""


def _keep_writing(target: Path, seconds: float, period: float = 0.05) -> int:
    """Rewrite ``target`` every ``period`` seconds, never leaving the folder quiet; the count."""
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        target.write_text(OTTERS.format(n=n), encoding="utf-8")
        n += 1
        time.sleep(period)
    return n - 1


def test_the_index_is_written_once_the_folder_is_quiet(make_kb: Any, kb_folder: Path) -> None:
    """Saves in a row are applied without writing the whole index between them; the index
    reaches the disk once the folder has been quiet for a second."""
    kb, waiter = _watched(make_kb, kb_folder)
    opened = _saved_generation(kb)
    last = _keep_writing(kb_folder / "otters.md", seconds=2.5)
    waiter.wait_for(lambda: f"{last} otters" in kb.retrieve(QUESTION)[0].text)
    assert len(waiter.updates) >= 2                       # several batches were applied...
    assert _saved_generation(kb) == opened                # ...and none was written meanwhile
    deadline = time.monotonic() + 10
    while _saved_generation(kb) == opened and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _saved_generation(kb) != opened
    again = make_kb(kb_folder, debounce_ms=100)            # what was written is the latest state
    again.open()
    assert f"{last} otters" in again.retrieve(QUESTION)[0].text


def test_changes_that_never_stop_are_still_written(make_kb: Any, kb_folder: Path,
                                                  monkeypatch: Any) -> None:
    from daemon.kb import watcher

    monkeypatch.setattr(watcher, "SAVE_WITHIN_S", 1.0)
    kb, waiter = _watched(make_kb, kb_folder)
    opened = _saved_generation(kb)
    _keep_writing(kb_folder / "otters.md", seconds=3.0)
    assert _saved_generation(kb) != opened                # written while the writes went on


def test_folder_deleted_and_recreated(make_kb: Any, kb_folder: Path) -> None:
    kb, waiter = _watched(make_kb, kb_folder)
    embedder = kb._embedder
    before = embedder.count
    shutil.rmtree(kb_folder)
    waiter.wait_for(lambda: kb.status()["documents"] == 0)
    assert "missing" in kb.status()["reason"]
    assert kb.retrieve("How tall is Skerrimore lighthouse?") == []

    shutil.copytree(SAMPLE_KB, kb_folder)
    waiter.wait_for(lambda: kb.status()["documents"] == 3)
    assert kb.status()["reason"] == ""
    assert top_source(kb, "How tall is Skerrimore lighthouse?") == "skerrimore_lighthouse.md"
    assert embedder.count == before                        # same content: vectors were kept

    # and the new watch works: a file added now is picked up too
    (kb_folder / "otters.md").write_text(OTTERS.format(n=5), encoding="utf-8")
    waiter.wait_for(lambda: top_source(kb, QUESTION) == "otters.md")


def test_a_bad_file_arriving_live_does_not_stop_the_watcher(make_kb: Any, kb_folder: Path) -> None:
    kb, waiter = _watched(make_kb, kb_folder)
    (kb_folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\nthis is not a pdf")
    waiter.wait_for(lambda: "broken.pdf" in kb.status()["failed"])
    (kb_folder / "otters.md").write_text(OTTERS.format(n=9), encoding="utf-8")
    waiter.wait_for(lambda: top_source(kb, QUESTION) == "otters.md")
    assert "PDF" in kb.status()["failed"]["broken.pdf"]


def test_a_symlink_loop_arriving_live_is_logged_and_announced(make_kb: Any, kb_folder: Path, caplog: Any) -> None:
    """Skipped like every other bad file: a "skipping" line in the log and an update (the
    KnowledgeBase property's failed list changed), at the moment it happens."""
    caplog.set_level(logging.WARNING, logger="daemon.kb")
    kb, waiter = _watched(make_kb, kb_folder)
    before = len(waiter.updates)
    os.symlink("loopa.txt", kb_folder / "loopb")
    os.symlink("loopb", kb_folder / "loopa.txt")
    waiter.wait_for(lambda: len(waiter.updates) > before)
    assert kb.status()["failed"] == {"loopa.txt": "symlink loop"}
    assert waiter.updates[-1] == (3, 8)                   # the documents themselves did not change
    assert "knowledge base: skipping loopa.txt: symlink loop" in caplog.text


# watchdog re-registers the same inotify watch when the folder comes back, and says so.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_a_folder_moved_out_and_back_in(make_kb: Any, kb_folder: Path, tmp_path: Path) -> None:
    kb, waiter = _watched(make_kb, kb_folder)
    embedder = kb._embedder
    (kb_folder / "wildlife").mkdir()
    (kb_folder / "wildlife" / "otters.md").write_text(OTTERS.format(n=11), encoding="utf-8")
    waiter.wait_for(lambda: top_source(kb, QUESTION) == "wildlife/otters.md")
    kb.flush()        # the save after an update also computes the new sentences' vectors
    before = embedder.count

    os.rename(kb_folder / "wildlife", tmp_path / "wildlife")          # out of the watched tree
    waiter.wait_for(lambda: kb.status()["documents"] == 3)
    assert not any("otters" in s for s in _sources(kb))

    os.rename(tmp_path / "wildlife", kb_folder / "nature")             # back in, under a new name
    waiter.wait_for(lambda: top_source(kb, QUESTION) == "nature/otters.md")
    assert embedder.count == before                                    # its vectors were kept


# ---------------------------------------------------------------------- the real service
MOON = "The moon base is called Selene Nine.\n"


def test_service_started_without_its_folder_uses_it_once_it_appears(tmp_path: Path) -> None:
    """`sottovoced` started with a knowledge-base folder that does not exist yet: it says so
    (log warning, KnowledgeBase property); once the folder and a file appear, questions use the
    file. The embedding model must be ready for that first file: start-up loads it only when
    there is something to search, and loading it when the file arrives (importing torch,
    5-10 s on two cores) left questions without the document that the log said was back."""
    from tests.fixtures_dbus import make_service_home, wait_until
    from tests.fixtures_service import service_with_client

    kb_folder = tmp_path / "kb_late"
    home = make_service_home(tmp_path, kb=kb_folder)
    home.write_config("conversation:\n  history_file: ''\n")
    with service_with_client(tmp_path, home) as (_bus, service, client):
        log = service.log.read_text(errors="replace")
        assert any("WARNING" in line and f"folder {kb_folder} is missing" in line
                   for line in log.splitlines()), service.log_tail()
        info = {k: v.value for k, v in client.get("KnowledgeBase").items()}
        assert info["documents"] == 0 and "missing" in info["failed"].get(".", ""), info

        wait_until(lambda: "loading embedding model" in service.log.read_text(errors="replace"),
                   90, "the embedding model to load with no document to embed yet")
        mark = client.mark()
        kb_folder.mkdir()
        (kb_folder / "m.txt").write_text(MOON, encoding="utf-8")
        client.wait("IndexUpdated", lambda body: body[0] == 1, after=mark, timeout=30)
        reply, sources = client.call("Ask", "s", ["What is the moon base called?"])
        assert sources == ["m.txt"], (reply, sources, service.log_tail())
        info = {k: v.value for k, v in client.get("KnowledgeBase").items()}
        assert info["documents"] == 1 and "." not in info["failed"], info


class _Lines:
    """A process's stdout lines as they come."""

    def __init__(self, proc: "subprocess.Popen[str]") -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._reader = threading.Thread(target=self._read, daemon=True, name="watch-lines")
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def join(self) -> list[str]:
        self._reader.join(10)
        return self.lines


@contextlib.contextmanager
def _watching(bus: Any) -> Iterator[tuple["subprocess.Popen[str]", _Lines]]:
    """`sottovoce watch` on ``bus`` and the lines it prints; killed afterwards if still running."""
    proc = subprocess.Popen([str(SOTTOVOCE), "watch"], env=bus.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc, _Lines(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _kb_changes(client: Any, after: int) -> list[dict[str, Any]]:
    """Every KnowledgeBase value announced by PropertiesChanged since ``after``, unwrapped."""
    return [{k: v.value for k, v in body[1]["KnowledgeBase"].value.items()}
            for body in client.since(after, "PropertiesChanged") if "KnowledgeBase" in body[1]]


def test_service_announces_indexing_progress_and_status_shows_it(tmp_path: Path) -> None:
    """A large file dropped into the running service's folder: the KnowledgeBase property's
    ``indexing`` says which file and how many chunks, announced by PropertiesChanged as it
    goes; `sottovoce status` prints it; it is empty again once IndexUpdated has come."""
    from tests.fixtures_dbus import make_service_home, run_cli, wait_until
    from tests.fixtures_kb import filler_text
    from tests.fixtures_service import service_with_client

    kb_folder = tmp_path / "kb"
    kb_folder.mkdir()
    (kb_folder / "m.txt").write_text(MOON, encoding="utf-8")
    (kb_folder / "early.txt").write_text(filler_text(100_000), encoding="utf-8")     # ~80 chunks
    home = make_service_home(tmp_path, kb=kb_folder)
    home.write_config("conversation:\n  history_file: ''\n")
    with service_with_client(tmp_path, home) as (bus, service, client), _watching(bus) as (watch, printed):
        # The first indexing, before READY=1: systemd hears of each step (and grants more time).
        lines = service.notify.lines()
        loading = lines[:lines.index("READY=1")]
        assert "EXTEND_TIMEOUT_USEC=120000000" in loading, loading
        assert any(m.startswith("STATUS=indexing file 1 of 2: early.txt and 1 more file, ")
                   and m.endswith(" chunks embedded")
                   for m in loading), "\n".join(loading)
        wait_until(lambda: bool(printed.lines), 30, "`sottovoce watch` to print the state")
        mark = client.mark()
        (kb_folder / "big.txt").write_text(filler_text(300_000), encoding="utf-8")   # ~240 chunks

        def embedding_started(body: list[Any]) -> bool:
            kb = body[1].get("KnowledgeBase")
            return kb is not None and ", 0 of " not in kb.value["indexing"].value and \
                "big.txt, " in kb.value["indexing"].value

        client.wait("PropertiesChanged", embedding_started, after=mark, timeout=120)
        out = run_cli(bus.env, "status")
        assert out.returncode == 0, out.stderr
        line = next((ln.strip() for ln in out.stdout.splitlines() if "indexing" in ln), "")
        assert line.startswith("indexing file 1 of 1: big.txt, ") and line.endswith(" chunks embedded"), out.stdout

        client.wait("IndexUpdated", lambda body: body[0] == 3, after=mark, timeout=300)
        wait_until(lambda: _kb_changes(client, mark)[-1]["indexing"] == "", 10, "the idle KnowledgeBase")
        progress = [kb["indexing"] for kb in _kb_changes(client, mark)]
        done = [int(p.split(", ")[1].split(" of ")[0]) for p in progress if "chunks embedded" in p]
        assert done == sorted(done) and len(set(done)) >= 2, progress
        assert client.get("KnowledgeBase")["indexing"].value == ""
        assert "indexing" not in run_cli(bus.env, "status").stdout
        assert json.loads(run_cli(bus.env, "status", "--json").stdout)["knowledge_base"]["indexing"] == ""
        watch.send_signal(signal.SIGINT)
        assert watch.wait(30) == 0
        lines = printed.join()
        assert any(ln.startswith("knowledge base: indexing file 1 of 1: big.txt, ") for ln in lines), lines
        assert "index updated: 3 documents" in "\n".join(lines), lines
        assert [ln for ln in lines if ln.startswith("knowledge base: ")][-1].startswith(
            "knowledge base: 3 documents, "), lines
        assert not [a for a, b in zip(lines, lines[1:]) if a == b and a.startswith("knowledge base: ")], lines
        log = service.log.read_text(errors="replace")
        assert "swigfaiss" not in log                                     # faiss's loader notes
        assert "indexing 2/2: m.txt" in log and "indexed 2 files\n" in log   # start-up indexing lines


def test_a_file_name_with_a_newline_keeps_each_log_line_whole(make_kb: Any, kb_folder: Path, caplog: Any) -> None:
    """A name may hold a newline (or an escape sequence): logged as it was, it split the
    line, or could fake a line of its own. It is logged with Python's escapes instead."""
    caplog.set_level(logging.INFO, logger="daemon.kb")
    (kb_folder / "weir\nnotes.txt").write_text("The Pollard weir is 3 metres high.\n", encoding="utf-8")
    kb, waiter = _watched(make_kb, kb_folder)                  # indexed at open
    arrived = kb_folder / "otters\nknowledge base: removed everything.md"
    arrived.write_text(OTTERS.format(n=9), encoding="utf-8")   # and one arriving live
    waiter.wait_for(lambda: top_source(kb, QUESTION) == arrived.name)
    arrived.unlink()
    waiter.wait_for(lambda: arrived.name not in _sources(kb))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("daemon.kb")]
    assert all("\n" not in m for m in messages), [m for m in messages if "\n" in m]
    assert "knowledge base: indexed 'weir\\nnotes.txt': 1 chunk" in messages, messages
    escaped = repr(arrived.name)
    assert f"knowledge base: indexed {escaped}: 1 chunk" in messages, messages
    assert f"knowledge base: removed {escaped}" in messages, messages
