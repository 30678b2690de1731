"""The CLI's answers to what a person can get wrong (no sound card, a bad --out, a question
too long, an empty one, a folder for a file, ...): one line, its own exit code, and cheap
things checked before any model loads. Real CLI, real models, real service where one is
involved.

"Before any model loads" is shown with a config whose models do not exist: a check that
came after loading would fail with EXIT_MODEL instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from daemon import errors
from daemon.messages import MAX_TEXT_CHARS
from tests.fixtures_core import DATA, ROOT, one_line_error, sottovoce
from tests.fixtures_dbus import (
    SOTTOVOCE, SOTTOVOCED, ServiceProcess, busctl, make_service_home, start_private_bus,
)

pytestmark = pytest.mark.timeout(600)

A = ("org.sottovoce.Assistant", "/org/sottovoce/Assistant", "org.sottovoce.Assistant1")
MOON_FACT = "The moon base of the Artemis Four mission is called Selene Nine.\n"


def no_card(env: dict[str, str]) -> dict[str, str]:
    """The environment without the virtual sound card another test may have started."""
    return {k: v for k, v in env.items() if k != "PULSE_SERVER"}


@pytest.fixture()
def no_models(tmp_path: Path) -> Path:
    """A config whose LLM and voice are missing, and whose speaker does not exist."""
    cfg = tmp_path / "no_models.yaml"
    cfg.write_text("audio:\n  output: no-such-speaker-here\n"
                   f"llm:\n  model: {tmp_path / 'missing.gguf'}\n"
                   f"tts:\n  voice: {tmp_path / 'missing.onnx'}\n  fallback: none\n"
                   f"rag:\n  index_dir: {tmp_path / 'index'}\n")
    return cfg


def has_default_output(env: dict[str, str]) -> bool:
    probe = "import sounddevice as sd; sd.query_devices(None, 'output')"
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0


# ------------------------------------------------------------------ 1. no sound card
def test_no_output_device_is_one_line_before_models_load(cli_env, no_models: Path) -> None:
    env = no_card(cli_env)
    for args in (["speak", "Hello there"], ["ask", "--local", "Hello"]):
        res = sottovoce("--config", str(no_models), *args, env=env)
        one_line_error(res, errors.EXIT_NO_DEVICE, "no audio output device", "--out")
    if has_default_output(env):
        pytest.skip("this machine has a default sound card: the PortAudio default case cannot be shown")
    res = sottovoce("speak", "Hello there", env=env)      # PortAudio: "Error querying device -1"
    one_line_error(res, errors.EXIT_NO_DEVICE, "no audio output device", "--out")


def test_in_process_fallback_with_the_service_running_checks_the_device(
        assistant: ServiceProcess, espeak, no_models: Path, tmp_path: Path) -> None:
    env = no_card({**assistant.bus.env, "HOME": str(tmp_path)})
    question = espeak("How tall is the lighthouse?", tmp_path / "q.wav")
    for args in (["ask", "--wav", str(question)], ["ask", "--no-streaming", "Hello"]):
        res = subprocess.run([str(SOTTOVOCE), "--config", str(no_models), *args], env=env,
                             capture_output=True, text=True, timeout=120)
        one_line_error(res, errors.EXIT_NO_DEVICE, "no audio output device")


# ------------------------------------------------------------------ 2. --out
def test_bad_out_path_is_refused_before_any_work(cli_env, no_models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "outdir"
    folder.mkdir()
    cases = [(f"{folder}{os.sep}", "folder"), (str(folder), "folder"),
             ("/proc/sottovoce-test.wav", "cannot write"), (str(tmp_path / "reply.aac"), ".aac")]
    for out, hint in cases:
        for args in (["speak", "Hello"], ["ask", "--local", "Hello"]):
            res = sottovoce("--config", str(no_models), *args, "--out", out, env=cli_env)
            one_line_error(res, errors.EXIT_BAD_ARG, hint)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("suffix,fmt", [(".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3"),
                                        (".wav", "WAV")])
def test_out_writes_the_format_its_extension_names(cli_env, tmp_path: Path, suffix: str, fmt: str) -> None:
    import soundfile

    out = tmp_path / f"hello{suffix}"
    res = sottovoce("speak", "Hello there.", "--out", str(out), env=cli_env)
    assert res.returncode == 0, res.stderr
    info = soundfile.info(str(out))
    assert info.format == fmt and info.duration > 0.3


def test_sottovoced_output_must_be_a_writable_wav(tmp_path: Path) -> None:
    bus = start_private_bus(tmp_path / "bus")
    try:
        home = make_service_home(tmp_path / "svc")
        env = {**bus.env, "HOME": str(home.home), "HF_HUB_OFFLINE": "1"}
        (tmp_path / "outdir").mkdir()
        for out, hint in ((f"{tmp_path / 'outdir'}{os.sep}", "folder"),
                          (str(tmp_path / "reply.mp3"), ".mp3"),
                          ("/proc/sottovoce-test.wav", "cannot write")):
            res = subprocess.run([str(SOTTOVOCED), "--config", str(home.config), "--input", "none",
                                  "--output", out], env=env, capture_output=True, text=True, timeout=60)
            assert res.returncode == errors.EXIT_BAD_ARG, (out, res.returncode, res.stderr[-2000:])
            assert "Traceback" not in res.stderr and "sottovoced: " in res.stderr and hint in res.stderr
        started = time.monotonic()
        res = subprocess.run([str(SOTTOVOCED), "--config", str(home.config), "--input",
                              str(tmp_path / "typo.wav"), "--output", str(tmp_path / "r.wav")],
                             env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == errors.EXIT_BAD_AUDIO and "no such audio file" in res.stderr, res.stderr[-2000:]
        assert "loading" not in res.stderr, "the models loaded before the missing --input file was noticed"
        print(f"missing --input refused after {time.monotonic() - started:.1f} s")
    finally:
        bus.stop()


# ------------------------------------------------------------------ 3. --kb with the service
def test_ask_kb_runs_in_process_on_that_folder_while_the_service_runs(
        assistant: ServiceProcess, pulse, tmp_path: Path) -> None:
    kb = tmp_path / "moonkb"
    kb.mkdir()
    (kb / "moon.md").write_text("# Artemis Four\n\n" + MOON_FACT)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"rag:\n  index_dir: {tmp_path / 'index'}\n")
    env = pulse.subprocess_env({**assistant.bus.env, "HOME": str(tmp_path)})
    before = busctl(assistant.bus, "get-property", *A, "LastTranscript").stdout
    res = subprocess.run([str(SOTTOVOCE), "--config", str(cfg), "ask", "--json",
                          "What is the Artemis Four moon base called?", "--kb", str(kb)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["sources"] == ["moon.md"], data
    assert "selene" in data["reply"].lower(), data
    assert busctl(assistant.bus, "get-property", *A, "LastTranscript").stdout == before


# ------------------------------------------------------------------ 4. too long
def test_question_over_the_dbus_limit_is_refused_in_process(cli_env, no_models: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "x.wav")
    for text in ("why " * 3250, "x" * (MAX_TEXT_CHARS + 1)):
        res = sottovoce("--config", str(no_models), "ask", "--local", text, "--out", out, env=cli_env)
        one_line_error(res, errors.EXIT_BAD_ARG, str(MAX_TEXT_CHARS), str(len(text)))
    # At the limit, the question is taken (and the missing model is what stops it).
    res = sottovoce("--config", str(no_models), "ask", "--local", "x" * MAX_TEXT_CHARS, "--out", out,
                    env=cli_env)
    assert res.returncode == errors.EXIT_MODEL, res.stderr


# ------------------------------------------------------------------ 5. history
def test_local_ask_neither_reads_nor_writes_the_service_history(cli_env, tmp_path: Path) -> None:
    home = tmp_path / "home"
    history = home / ".local/state/sottovoce/history.json"
    history.parent.mkdir(parents=True)
    history.write_text(json.dumps({"turns": [
        ["What is the moon base called?", "The moon base is called Selene Nine."],
        ["Who named it?", "The moon base Selene Nine was named by the crew."]]}))
    saved = history.read_bytes()
    env = {**cli_env, "HOME": str(home)}
    res = sottovoce("ask", "--local", "--json", "What is it called?", "--out", str(tmp_path / "r.wav"),
                    env=env)
    assert res.returncode == 0, res.stderr
    assert history.read_bytes() == saved
    assert "selene" not in json.loads(res.stdout)["reply"].lower()


# ------------------------------------------------------------------ 6. smaller ones
def test_speak_with_no_words_is_nothing_to_say(cli_env, tmp_path: Path) -> None:
    out = tmp_path / "e.wav"
    for text in ("🍕🚀", "...", "```\nx = 1\n```"):
        res = sottovoce("speak", text, "--out", str(out), env=cli_env)
        one_line_error(res, errors.EXIT_BAD_ARG, "nothing to say")
    assert not out.exists()


def test_kb_search_empty_query(cli_env) -> None:
    res = sottovoce("kb", "search", "--kb", str(ROOT / "knowledge_base"), "  ", env=cli_env)
    one_line_error(res, errors.EXIT_BAD_ARG, "empty")


def test_folder_for_a_file_and_file_for_a_folder(cli_env, tmp_path: Path) -> None:
    res = sottovoce("transcribe", str(tmp_path), env=cli_env)
    one_line_error(res, errors.EXIT_BAD_AUDIO, "is a folder")
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nSome text.\n")
    res = sottovoce("ask", "--local", "hello", "--kb", str(doc), "--out", str(tmp_path / "x.wav"),
                    env=cli_env)
    one_line_error(res, errors.EXIT_KB, "not a folder")


def test_truncated_mp3_decoder_notes_stay_quiet(cli_env, tmp_path: Path) -> None:
    import soundfile

    data, rate = soundfile.read(str(DATA / "jfk.flac"))
    whole = tmp_path / "jfk.mp3"
    soundfile.write(str(whole), data, rate, format="MP3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    res = sottovoce("transcribe", str(cut), env=cli_env)
    assert res.returncode == 0, res.stderr
    assert "fellow americans" in res.stdout.lower()
    assert res.stderr == ""


def test_every_subcommand_help_says_what_it_does() -> None:
    import argparse

    from daemon.cli.main import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    if not (child.description or "").strip():
                        missing.append(f"{path} {name}")
                    missing += walk(child, f"{path} {name}")
        return missing

    assert walk(build_parser(), "sottovoce") == []


def test_words_options_and_empty_paths_as_a_user_types_them(cli_env, tmp_path: Path) -> None:
    """Unquoted words, --config after the command, and an empty path or neither question
    form: each a clear answer, not argparse's "unrecognized arguments"."""
    out = tmp_path / "hello.wav"
    res = sottovoce("speak", "hello", "there", "--out", str(out), env=cli_env)
    assert res.returncode == 0 and out.stat().st_size > 1000, res.stderr
    res = sottovoce("ask", "how", "tall", "is", "it", "--kb", str(tmp_path / "nowhere"), "--out", str(out), env=cli_env)
    one_line_error(res, errors.EXIT_KB, "does not exist")
    one_line_error(sottovoce("ask", env=cli_env), errors.EXIT_BAD_ARG, "text or as --wav")
    one_line_error(sottovoce("ask", "hi", "--wav", str(out), env=cli_env), errors.EXIT_BAD_ARG, "text or as --wav")
    for args in (["ask", "hi", "--out", ""], ["speak", "hi", "--out", ""], ["ask", "hi", "--kb", ""]):
        one_line_error(sottovoce(*args, env=cli_env), errors.EXIT_BAD_ARG, "is empty")
    config = tmp_path / "c.yaml"
    config.write_text("vad:\n  threshold: 0.42\n", encoding="utf-8")
    res = sottovoce("config", "show", "--config", str(config), env=cli_env)
    assert res.returncode == 0 and "threshold: 0.42" in res.stdout, res.stderr
    one_line_error(sottovoce("emotion", "calm", "abc", env=cli_env), errors.EXIT_BAD_ARG, "not a number")
    res = sottovoce("models", env=cli_env)
    assert res.returncode == 2 and "required: ACTION" in res.stderr, res.stderr


def test_write_audio_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    from daemon.audio.filewrite import check_output_file, write_audio

    samples = np.zeros(1000, dtype=np.float32)
    with pytest.raises(errors.BadArgumentError, match=r"\.aac"):
        write_audio(tmp_path / "x.aac", samples, 16000)
    with pytest.raises(errors.BadArgumentError, match="folder"):
        check_output_file(tmp_path)
    with pytest.raises(errors.BadArgumentError, match="does not exist"):
        check_output_file(tmp_path / "new" / "deep" / "x.flac")
    assert not (tmp_path / "new").exists()
    keep = tmp_path / "keep.wav"
    keep.write_bytes(b"RIFF....")
    check_output_file(keep)
    assert keep.read_bytes() == b"RIFF...."


# ------------------------------------------------------------------ 7. indexing is not silent
def test_ask_says_when_it_indexes_a_new_folder(cli_env, tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "moon.md").write_text("# Artemis Four\n\n" + MOON_FACT)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"rag:\n  index_dir: {tmp_path / 'index'}\n")
    ask = ["--config", str(cfg), "ask", "--local", "What is the moon base called?", "--kb", str(kb),
           "--out", str(tmp_path / "r.wav")]
    res = sottovoce(*ask, env=cli_env)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines() == [
        "sottovoce: indexing 1 file of the knowledge base (new or changed); this can take a while"]
    res = sottovoce(*ask, env=cli_env)                 # up to date: nothing to say
    assert res.returncode == 0 and res.stderr == "", res.stderr


# ------------------------------------------------------------------ 8. words left over
@pytest.mark.parametrize("args,command", [
    (["emotion", "calm", "0.3", "extra"], "emotion"),
    (["status", "extra"], "status"),
    (["config", "show", "extra"], "config show"),
    (["kb", "search", "--kb", "/nonexistent", "query", "--bogus"], "kb search"),
    (["speak", "hello", "--loud"], "speak"),
])
def test_extra_arguments_are_reported_by_their_subcommand(cli_env, args: list[str], command: str) -> None:
    """Not the top-level usage: the subcommand's, which says what it does take."""
    res = sottovoce(*args, env=cli_env)
    assert res.returncode == 2 and res.stdout == "", res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith(f"usage: sottovoce {command} "), res.stderr
    assert lines[-1] == f"sottovoce {command}: error: unrecognized arguments: {args[-1]}", res.stderr
    assert "Traceback" not in res.stderr


# ------------------------------------------------------------------ 9. --out is replaced whole or not at all
def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_ctrl_c_during_speak_keeps_the_existing_out_file(cli_env, tmp_path: Path) -> None:
    """SIGINT once the reply is being written: exit 130, the old file byte for byte, and no
    partial file (it used to be a 13 MB partial recording)."""
    import signal

    out = tmp_path / "keep.wav"
    out.write_bytes((DATA / "question_lighthouse.wav").read_bytes())
    before = _md5(out)
    text = " ".join(["The keeper climbed the stairs to light the lamp."] * 300)
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli.main", "speak", text, "--out", str(out)],
                            env=cli_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Once it writes (or, for a writer that does not stream, once it has had time to speak).
        deadline = time.monotonic() + 20
        while not any(p.stat().st_size > 100_000 for p in tmp_path.glob(".keep.wav.*.part")):
            assert proc.poll() is None, proc.communicate()
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, (proc.returncode, err)
    assert _md5(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


# ------------------------------------------------------------------ 10. output over input
def test_ask_out_over_its_own_wav_is_refused(cli_env, no_models: Path, tmp_path: Path) -> None:
    question = tmp_path / "q.wav"
    question.write_bytes((DATA / "question_lighthouse.wav").read_bytes())
    before = _md5(question)
    os.link(question, tmp_path / "hard.wav")
    for out in (question, tmp_path / "." / "q.wav", tmp_path / "hard.wav"):
        res = sottovoce("--config", str(no_models), "ask", "--wav", str(question), "--out", str(out), env=cli_env)
        one_line_error(res, errors.EXIT_BAD_ARG, "is the same file as --wav", str(out))
    assert _md5(question) == before


def test_sottovoced_output_over_its_input_is_refused(tmp_path: Path) -> None:
    """`sottovoced --input X --output X` emptied the recording to a 44-byte WAV."""
    bus = start_private_bus(tmp_path / "bus")
    try:
        home = make_service_home(tmp_path / "svc")
        env = {**bus.env, "HOME": str(home.home), "HF_HUB_OFFLINE": "1"}
        same = tmp_path / "same.wav"
        same.write_bytes((DATA / "question_lighthouse.wav").read_bytes())
        before = _md5(same)
        for out in (same, tmp_path / "svc" / ".." / "same.wav"):
            res = subprocess.run([str(SOTTOVOCED), "--config", str(home.config), "--input", str(same),
                                  "--output", str(out)], env=env, capture_output=True, text=True, timeout=60)
            assert res.returncode == errors.EXIT_BAD_ARG, (res.returncode, res.stderr[-2000:])
            assert "Traceback" not in res.stderr and "loading" not in res.stderr, res.stderr[-2000:]
            assert f"sottovoced: --output {out} is the same file as --input {same}" in res.stderr, res.stderr
            assert _md5(same) == before
    finally:
        bus.stop()


# ------------------------------------------------------------------ 11. cheap checks first
def test_missing_kb_is_found_before_the_audio_is_decoded(cli_env, tmp_path: Path) -> None:
    """The audio was decoded first: a header claiming 1 Hz took 43 s and 2.7 GB before the
    missing folder was reported. Bad audio plus a missing folder now answers the folder."""
    junk = tmp_path / "notes.wav"
    junk.write_text("this is not audio at all\n" * 50)
    res = sottovoce("ask", "--wav", str(junk), "--kb", str(tmp_path / "nosuch"), "--out", str(tmp_path / "r.wav"),
                    env=cli_env)
    one_line_error(res, errors.EXIT_KB, "does not exist")


def test_absurd_sample_rate_is_refused_at_once(cli_env, tmp_path: Path) -> None:
    import soundfile

    wav = tmp_path / "rate1.wav"
    data, rate = soundfile.read(str(DATA / "question_lighthouse.wav"), dtype="int16")
    soundfile.write(str(wav), data[: rate // 2], rate, subtype="PCM_16")
    raw = bytearray(wav.read_bytes())
    fmt = raw.index(b"fmt ")
    raw[fmt + 12:fmt + 16] = (1).to_bytes(4, "little")
    wav.write_bytes(bytes(raw))
    for args in (["transcribe", str(wav)], ["ask", "--wav", str(wav), "--out", str(tmp_path / "r.wav")]):
        res = sottovoce(*args, env=cli_env, timeout=60)
        one_line_error(res, errors.EXIT_BAD_AUDIO, "sample rate of 1 Hz is not plausible")


# ------------------------------------------------------------------ 12. a knowledge base with nothing to read
def test_kb_of_only_unsupported_files_is_empty(cli_env, no_models: Path, tmp_path: Path) -> None:
    """A folder of .csv and .json passed the check and got an invented answer, exit 0."""
    kb = tmp_path / "kb"
    (kb / "sub").mkdir(parents=True)
    (kb / "a.csv").write_text("height,212\n")
    (kb / "sub" / "b.json").write_text("{}\n")
    (kb / ".hidden.md").write_text("# hidden\n")
    res = sottovoce("--config", str(no_models), "ask", "--local", "How tall is it?", "--kb", str(kb),
                    "--out", str(tmp_path / "r.wav"), env=cli_env)
    one_line_error(res, errors.EXIT_KB_EMPTY, "holds no documents it can read", ".txt, .md")


# ------------------------------------------------------------------ 13. odd --emotion values
def test_empty_emotion_or_no_intensity_is_refused(cli_env, no_models: Path, tmp_path: Path) -> None:
    """`--emotion ""` and `--emotion calm=` quietly meant the default style."""
    for spec, hint in (("", "--emotion is empty"), ("  ", "--emotion is empty"), ("calm=", "no intensity")):
        for args in (["speak", "Hello"], ["ask", "--local", "Hello"]):
            res = sottovoce("--config", str(no_models), *args, f"--emotion={spec}",
                            "--out", str(tmp_path / "x.wav"), env=cli_env)
            one_line_error(res, errors.EXIT_BAD_ARG, hint)


# ------------------------------------------------------------------ 14. an --out name that is not UTF-8
def test_out_name_not_utf8_is_refused_before_synthesis(cli_env, no_models: Path, tmp_path: Path) -> None:
    """It gave a UnicodeEncodeError traceback after the whole text had been synthesized."""
    out = os.fsencode(tmp_path) + b"/o\xff.wav"
    res = subprocess.run([sys.executable, "-m", "daemon.cli.main", "--config", str(no_models), "speak", "Hello",
                          "--out", out], env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    one_line_error(res, errors.EXIT_BAD_ARG, "UTF-8")
    assert list(tmp_path.iterdir()) == [no_models]
