"""The in-process CLI end to end: real models, real audio, real files, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from daemon import errors
from tests.fixtures_audio import to_16k
from tests.fixtures_core import DATA, ROOT, one_line_error, sottovoce

pytestmark = pytest.mark.timeout(600)


def test_ask_wav_answers_out_loud_with_the_fact(cli_env, espeak, tmp_path: Path) -> None:
    """espeak asks about a KB fact; the spoken reply, transcribed back, holds the fact."""
    question = espeak("How many steps does Skerrimore lighthouse have?", tmp_path / "q.wav")
    out = tmp_path / "reply.wav"
    res = sottovoce("ask", "--local", "--json", "--wav", str(question), "--out", str(out), env=cli_env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert set(data) == {"transcript", "reply", "sources", "timings"}
    assert "lighthouse" in data["transcript"].lower()
    assert data["sources"] == ["skerrimore_lighthouse.md"]
    assert set(data["timings"]) == {"stt_s", "retrieve_s", "llm_first_token_s", "first_audio_s", "total_s"}
    assert 0 < data["timings"]["first_audio_s"] <= data["timings"]["total_s"]
    heard = sottovoce("transcribe", str(out), env=cli_env)
    assert heard.returncode == 0, heard.stderr
    assert "212" in heard.stdout or "two hundred" in heard.stdout.lower(), (data["reply"], heard.stdout)


def test_ask_text_no_context_still_chats(cli_env, tmp_path: Path) -> None:
    res = sottovoce("ask", "--local", "--json", "Tell me a joke about penguins.",
                    "--emotion", "humorous=0.9", "--out", str(tmp_path / "a.wav"), env=cli_env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["sources"] == []
    assert len(data["reply"].split()) >= 3
    assert (tmp_path / "a.wav").stat().st_size > 10_000


def test_no_streaming_mode_gives_a_reply_too(cli_env, tmp_path: Path) -> None:
    res = sottovoce("ask", "--local", "--json", "--no-streaming", "What does error E7 mean on the kettle?",
                    "--out", str(tmp_path / "b.wav"), env=cli_env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["sources"] == ["zephyr_kettle_manual.txt"]
    assert data["timings"]["first_audio_s"] > data["timings"]["llm_first_token_s"]


@pytest.mark.parametrize("rate,channels", [(8000, 1), (44100, 2), (48000, 1)])
def test_transcribe_any_rate_and_stereo(cli_env, tmp_path: Path, rate: int, channels: int) -> None:
    src = tmp_path / f"jfk_{rate}_{channels}.wav"
    subprocess.run(["sox", "-R", str(DATA / "jfk.flac"), "-r", str(rate), "-c", str(channels), str(src)], check=True)
    res = sottovoce("transcribe", str(src), env=cli_env)
    assert res.returncode == 0, res.stderr
    assert "ask not what your country can do for you" in res.stdout.lower().replace(",", "")


def test_speak_writes_a_wav(cli_env, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    res = sottovoce("speak", "Hello there, **friend**! See https://example.com", "--out", str(out), env=cli_env)
    assert res.returncode == 0, res.stderr
    heard = sottovoce("transcribe", str(out), env=cli_env)
    assert "hello" in heard.stdout.lower() and "http" not in heard.stdout.lower()


def _peak_rss_mib(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, float]:
    """Run the CLI; its exit code and its own peak resident memory (MiB), from wait4."""
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli.main", *args], stdout=out, stderr=err,
                                env=env, cwd=ROOT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def test_speak_says_a_long_text_with_no_full_stop_in_bounded_memory(cli_env, transcriber, tmp_path: Path) -> None:
    """15,000 characters with no full stop took over 23 GB and the OOM killer: the voice got
    them as one sentence. `speak` says a text clause by clause, as the service's Say does
    (these 2,000 characters: ~1.8 GB before, ~0.38 GB now)."""
    import soundfile as sf

    text = " ".join(["once upon a time"] + ["the keeper climbed the stairs to light the lamp"] * 40
                    + ["and that is where the story ends"])
    out = tmp_path / "long.wav"
    code, peak = _peak_rss_mib(["speak", text, "--out", str(out)], cli_env, tmp_path)
    assert code == 0, (tmp_path / "stderr").read_text()
    assert peak < 800, f"speak peaked at {peak:.0f} MiB"
    audio, rate = sf.read(str(out), dtype="float32")
    words = len(text.split())
    assert words / 6 < audio.size / rate < words / 1.5, audio.size / rate     # all of it, at a speaking pace
    start, _ = transcriber.transcribe(to_16k(audio[: 5 * rate], rate))
    end, _ = transcriber.transcribe(to_16k(audio[-5 * rate:], rate))
    assert "once upon" in start.lower() and "story ends" in end.lower(), (start, end)    # in order


# ------------------------------------------------------------------ bad input
def _one_line_error(res: subprocess.CompletedProcess[str], code: int) -> None:
    one_line_error(res, code, ignore="sottovoce: indexing ")     # less the note on a first indexing


def test_silence_is_no_speech(cli_env, tmp_path: Path) -> None:
    import soundfile as sf

    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16000 * 2, dtype=np.float32), 16000)
    res = sottovoce("ask", "--local", "--wav", str(wav), "--out", str(tmp_path / "x.wav"), env=cli_env)
    _one_line_error(res, errors.EXIT_NO_SPEECH)
    assert "no speech" in res.stderr
    res = sottovoce("transcribe", str(wav), env=cli_env)
    _one_line_error(res, errors.EXIT_NO_SPEECH)


def test_empty_and_non_audio_files(cli_env, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio at all\n" * 50)
    for f in (empty, bogus):
        res = sottovoce("ask", "--local", "--wav", str(f), env=cli_env)
        _one_line_error(res, errors.EXIT_BAD_AUDIO)


def test_missing_and_empty_knowledge_base(cli_env, tmp_path: Path) -> None:
    q = ["ask", "--local", "hello", "--out", str(tmp_path / "x.wav")]
    res = sottovoce(*q, "--kb", str(tmp_path / "nope"), env=cli_env)
    _one_line_error(res, errors.EXIT_KB)
    (tmp_path / "empty").mkdir()
    res = sottovoce(*q, "--kb", str(tmp_path / "empty"), env=cli_env)
    _one_line_error(res, errors.EXIT_KB_EMPTY)


def test_unknown_emotion_and_bad_config(cli_env, tmp_path: Path) -> None:
    res = sottovoce("ask", "--local", "hello", "--emotion", "grumpy", env=cli_env)
    _one_line_error(res, errors.EXIT_BAD_ARG)
    assert "grumpy" in res.stderr and "humorous" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("vad:\n  end_silence_ms: fast\n")
    res = sottovoce("--config", str(bad), "config", "show", env=cli_env)
    _one_line_error(res, errors.EXIT_CONFIG)
    assert str(bad) in res.stderr and "vad.end_silence_ms" in res.stderr and "integer" in res.stderr


def test_kb_whose_documents_all_fail_is_treated_as_empty(cli_env, tmp_path: Path) -> None:
    """A folder of only broken documents got an invented answer with exit 0; it is now the
    empty-folder answer (exit 10), naming the files that could not be read."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "fake.pdf").write_bytes(b"this is not a PDF at all\n" * 20)
    (kb / "junk.md").write_bytes(bytes(range(256)) * 8)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"rag:\n  index_dir: {tmp_path / 'index'}\n")
    res = sottovoce("--config", str(cfg), "ask", "--local", "How tall is Skerrimore lighthouse?", "--kb", str(kb),
                    "--out", str(tmp_path / "r.wav"), env=cli_env)
    assert res.returncode == errors.EXIT_KB_EMPTY, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr
    last = res.stderr.splitlines()[-1]
    assert last.startswith(f"sottovoce: knowledge-base folder {kb} holds no usable documents (fake.pdf: "), last
    assert "junk.md: " in last
    assert not (tmp_path / "r.wav").exists()
