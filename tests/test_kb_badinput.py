"""Bad input: every broken file is skipped with a clear reason in status() while every other
document stays searchable. Also the `sottovoce kb` commands on a real folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.config import PROJECT_ROOT
from tests.fixtures_kb import top_source

CAFE = "Le Café Vandrelle on the Rue Oziane serves crème brûlée every Thursday.\n"


def _make_bad_files(folder: Path) -> None:
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Pages 2 0 R>>\ngarbage\x00\x01")
    (folder / "binary.txt").write_bytes(bytes(range(256)) * 20)
    (folder / "empty.md").write_bytes(b"")
    (folder / "blank.txt").write_text("   \n\n  \n", encoding="utf-8")
    (folder / "huge.txt").write_text("All work and no play makes a dull index.\n" * 1000, encoding="utf-8")
    (folder / "not_a_zip.docx").write_bytes(b"this is not a word document")
    os.symlink("loop.txt", folder / "loop.txt")
    os.symlink("missing-target.md", folder / "dangling.md")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "back_up")
    os.mkfifo(folder / "pipe.txt")
    (folder / "cafe_latin1.txt").write_bytes(CAFE.encode("cp1252"))
    # Windows Notepad's "Unicode" (UTF-16 LE with a BOM) and its big-endian twin are text.
    (folder / "weir_utf16.txt").write_bytes("The Pollard weir is 3 metres high.\n".encode("utf-16"))
    (folder / "mill_utf16be.txt").write_bytes(b"\xfe\xff" + "Hobbet mill grinds rye.\n".encode("utf-16-be"))
    (folder / "notes.bin").write_bytes(b"\x00" * 10)      # unsupported suffix: silently not a document
    # Names that are not UTF-8 (bytes from another system's encoding): cannot be embedded or sent.
    (folder / os.fsdecode(b"canal\xffnotes.txt")).write_text("The canal lock lifts boats.\n", encoding="utf-8")
    (folder / os.fsdecode(b"old\xfe")).mkdir()
    (folder / os.fsdecode(b"old\xfe") / "inside.md").write_text("# Inside\n\nText.\n", encoding="utf-8")


def test_bad_files_are_reported_and_the_rest_stays_searchable(make_kb: Any, kb_folder: Path) -> None:
    _make_bad_files(kb_folder)
    kb = make_kb(kb_folder, max_file_mb=0.01)          # a 10 kB cap stands in for a 200 MB file
    kb.open()
    failed = kb.status()["failed"]
    expected = {
        "broken.pdf": "not a valid PDF",
        "binary.txt": "binary data",
        "empty.md": "empty file",
        "blank.txt": "empty file",
        "huge.txt": "over the 10 kB limit (rag.max_file_mb)",
        "not_a_zip.docx": "not a valid .docx",
        "loop.txt": "symlink loop",
        "dangling.md": "broken symlink",
        "sub/back_up/": "symlink loop",
        "pipe.txt": "not a regular file",
        "canal\ufffdnotes.txt": "not valid UTF-8",
        "old\ufffd": "not valid UTF-8",
    }
    assert set(failed) == set(expected), failed
    for name, reason in expected.items():
        assert reason in failed[name], (name, failed[name])
    assert kb.status()["documents"] == 6                  # the sample three, Latin-1 and two UTF-16 files
    assert top_source(kb, "How high is the Pollard weir?") == "weir_utf16.txt"
    assert top_source(kb, "What does Hobbet mill grind?") == "mill_utf16be.txt"
    assert top_source(kb, "Which café serves crème brûlée?") == "cafe_latin1.txt"
    assert "crème brûlée" in kb.retrieve("Which café serves crème brûlée?")[0].text
    assert top_source(kb, "How tall is Skerrimore lighthouse?") == "skerrimore_lighthouse.md"
    assert top_source(kb, "What does E7 mean?") == "zephyr_kettle_manual.txt"
    assert top_source(kb, "When does the bakery open?") == "quillfeather_bakery_handbook.pdf"
    # Every name in the summary can be sent over D-Bus (a surrogate would fail to marshal).
    from dbus_fast import Message, MessageType

    from daemon.service.dbus_service import _kb_variants
    status = {**kb.status(), "failed": {**failed, os.fsdecode(b"x\xff.md"): "made up"},
              "indexing": os.fsdecode(b"file 1 of 1: y\xff.md")}
    Message(path="/", interface="org.example.T", member="Changed", message_type=MessageType.SIGNAL,
            signature="a{sv}", body=[_kb_variants(status)])._marshall(False)


def test_failures_persist_and_clear_when_the_file_is_fixed(make_kb: Any, kb_folder: Path, minilm: Any) -> None:
    from tests.fixtures_kb import CountingEmbedder

    (kb_folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    first = make_kb(kb_folder)
    first.open()
    second = make_kb(kb_folder, embedder=CountingEmbedder(minilm))
    second.open()
    assert "binary data" in second.status()["failed"]["binary.txt"]
    assert second._embedder.count == 0
    (kb_folder / "binary.txt").write_text("The spare key is under the blue flowerpot.\n", encoding="utf-8")
    second.sync_path(kb_folder / "binary.txt")
    assert "binary.txt" not in second.status()["failed"]
    assert top_source(second, "Where is the spare key?") == "binary.txt"


def test_unreadable_file_without_root_privileges(tmp_path: Path) -> None:
    # Root reads any file whatever its mode, so the service's real situation (a user meeting a
    # file it may not read) is reproduced in a child process that has lost root's power to
    # bypass file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("running as root without util-linux setpriv to drop CAP_DAC_OVERRIDE")
    folder, index = tmp_path / "kb", tmp_path / "index"
    folder.mkdir()
    (folder / "public.txt").write_text("The meeting room is on the fourth floor.\n", encoding="utf-8")
    (folder / "secret.txt").write_text("The safe code is 1234.\n", encoding="utf-8")
    os.chmod(folder / "secret.txt", 0o000)
    drop = [setpriv, "--bounding-set", "-dac_override,-dac_read_search",
            "--inh-caps", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run(
        [*drop, sys.executable, "-m", "tests.fixtures_kb", "status", str(folder), str(index)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout.strip().splitlines()[-1])
    assert status["documents"] == 1
    assert "permission denied" in status["failed"]["secret.txt"]


# ------------------------------------------------------------------ the CLI
@pytest.fixture
def kb_cli_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"rag:\n  index_dir: {tmp_path / 'cli-index'}\n", encoding="utf-8")
    return path


def test_cli_status_search_rebuild(kb_folder: Path, kb_cli_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli.main import main

    (kb_folder / "binary.txt").write_bytes(bytes(range(256)) * 4)
    assert main(["--config", str(kb_cli_config), "kb", "status", "--json", "--kb", str(kb_folder)]) == 0
    out = capsys.readouterr()
    status = json.loads(out.out)
    assert status["documents"] == 3 and status["chunks"] == 8
    assert "binary data" in status["failed"]["binary.txt"]
    assert status["folder"] == str(kb_folder)
    assert "indexing" in out.err or "[" in out.err      # progress went to stderr, not stdout

    assert main(["--config", str(kb_cli_config), "kb", "search", "--json", "--kb", str(kb_folder),
                 "-k", "2", "mascara in more light"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["relevant"] and len(found["passages"]) == 2
    assert found["passages"][0]["source"] == "skerrimore_lighthouse.md"

    assert main(["--config", str(kb_cli_config), "kb", "search", "--kb", str(kb_folder), "tell me a joke"]) == 0
    assert "would just chat" in capsys.readouterr().out

    assert main(["--config", str(kb_cli_config), "kb", "rebuild", "--kb", str(kb_folder)]) == 0
    assert "3 documents, 8 chunks, 1 failed" in capsys.readouterr().out


def test_cli_missing_folder_is_a_clear_error(tmp_path: Path, kb_cli_config: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli.main import main
    from daemon.errors import EXIT_KB

    missing = tmp_path / "no-such-folder"
    for action in (["status"], ["search", "x"], ["rebuild"]):
        assert main(["--config", str(kb_cli_config), "kb", *action, "--kb", str(missing)]) == EXIT_KB
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and str(missing) in err and "does not exist" in err


# ------------------------------------------------------------------ text without full stops
BRIDGE = "the vellacott footbridge over the river ambling has exactly nine stone arches"


def _words_without_punctuation(chars: int, seed: int, fact: str = "") -> str:
    """One line of ``chars`` characters of lower-case words, no punctuation, ``fact`` in the middle."""
    import random

    from daemon.config import load_config
    from daemon.kb.embedder import model_dir

    folder = model_dir(load_config(use_user_file=False).rag)
    assert folder is not None
    words = [w for w in (folder / "vocab.txt").read_text(encoding="utf-8").split()
             if w.isalpha() and w.islower() and len(w) > 2]
    rnd = random.Random(seed)
    half = " ".join(rnd.choice(words) for _ in range(chars // 12))[: chars // 2]
    return f"{half} {fact} {half}"[:chars] if fact else (half + " " + half)[:chars]


def test_a_document_without_full_stops_gives_short_notes(make_kb: Any, kb_folder: Path) -> None:
    """A long line with no sentence punctuation was one "sentence" as long as its chunk
    (about 1,500 characters), and the model would have been handed it, and read it out."""
    from daemon.kb.select import MAX_CLAUSE_CHARS

    (kb_folder / "ramble.txt").write_text(_words_without_punctuation(40_000, 7, BRIDGE) + "\n", encoding="utf-8")
    kb = make_kb(kb_folder)
    kb.open()
    question = "How many stone arches does the Vellacott footbridge have?"
    passages = kb.retrieve(question)
    assert passages and passages[0].source == "ramble.txt", passages
    notes = kb.select_context(question, passages, 3)
    assert notes and all(len(n.text) <= MAX_CLAUSE_CHARS for n in notes), [len(n.text) for n in notes]
    assert "nine stone arches" in notes[0].text, notes[0].text
    # The sample documents' sentences are far shorter than the cap: they are as before.
    question = "Who was the last keeper of Skerrimore lighthouse?"
    assert kb.select_context(question, kb.retrieve(question), 1)[0].text == "The last keeper was Ewan Dorrity."


def test_a_megabyte_on_one_line_gives_short_notes(make_kb: Any, tmp_path: Path) -> None:
    """1 MB on one line, with spaces and without any (a pasted blob): every clause that may
    become a note is at most MAX_CLAUSE_CHARS long. (Hashed-word vectors: which clause is
    picked does not matter here, and embedding a megabyte with MiniLM takes minutes.)"""
    from daemon.kb.select import MAX_CLAUSE_CHARS
    from tests.fixtures_kb import HashEmbedder

    folder = tmp_path / "giant"
    folder.mkdir()
    (folder / "words.txt").write_text(_words_without_punctuation(1_000_000, 3, BRIDGE) + "\n", encoding="utf-8")
    blob = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(1_000_000))
    (folder / "blob.txt").write_text(blob + "\n", encoding="utf-8")
    kb = make_kb(folder, embedder=HashEmbedder(), max_file_mb=2)
    kb.open()
    assert kb.status()["documents"] == 2, kb.status()
    for question in ("How many stone arches does the Vellacott footbridge have?", "What is in the blob?"):
        notes = kb.select_context(question, kb.retrieve(question), 5)
        assert notes and all(len(n.text) <= MAX_CLAUSE_CHARS for n in notes), [len(n.text) for n in notes]
    with kb._lock:
        chunks = [(c.text, c.heading) for c in kb._state.chunks.values()]
    from daemon.kb.select import clause_contexts

    longest = max(len(clause) for text, heading in chunks for clause, _ in clause_contexts(text, heading))
    assert longest <= MAX_CLAUSE_CHARS, longest


def test_a_damaged_pdf_is_named_once_without_the_pdf_library_s_own_warnings(tmp_path: Path) -> None:
    """pypdf's warnings ("invalid pdf header: b'...'", "EOF marker not found") reached the
    user beside the knowledge base's own line, which already says what is wrong."""
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "note.md").write_text("# Note\n\nThe Orrin ferry leaves at noon.\n", encoding="utf-8")
    (folder / "fake.pdf").write_bytes(bytes((i * 97 + 13) % 256 for i in range(2000)))
    config = tmp_path / "config.yaml"
    config.write_text(f"rag:\n  index_dir: {tmp_path / 'index'}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "daemon.cli.main", "--config", str(config), "kb", "status",
                             "--kb", str(folder)], capture_output=True, text=True, cwd=PROJECT_ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "skipping fake.pdf: not a valid PDF" in result.stderr, result.stderr
    assert "pypdf" not in result.stderr, result.stderr
    assert "fake.pdf: not a valid PDF" in result.stdout, result.stdout
