"""`sottovoce status | pause | resume | interrupt | emotion | say | reindex | reload | watch`
against the real service on a private bus, and the one-line answer when it is absent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from typing import Any

import pytest

from daemon.cli.remote import NOT_RUNNING, remote_ask
from daemon.errors import EXIT_BAD_ARG, EXIT_INTERRUPTED, EXIT_NO_SERVICE, BadArgumentError
from tests.fixtures_dbus import SOTTOVOCE, PrivateBus, ServiceProcess, busctl, run_cli, wait_until

A = ("org.sottovoce.Assistant", "/org/sottovoce/Assistant", "org.sottovoce.Assistant1")


def _prop(service: ServiceProcess, name: str) -> Any:
    out = busctl(service.bus, "--json=short", "get-property", *A, name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["data"]


def test_status_text_and_json(assistant: ServiceProcess) -> None:
    out = run_cli(assistant.bus.env, "status")
    assert out.returncode == 0, out.stderr
    assert f"state:           {_prop(assistant, 'State')}" in out.stdout
    assert "3 documents" in out.stdout and "models:" in out.stdout
    out = run_cli(assistant.bus.env, "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["state"] == _prop(assistant, "State")
    assert status["knowledge_base"]["documents"] == 3 and status["knowledge_base"]["failed"] == {}
    assert status["version"] == _prop(assistant, "Version")
    assert set(status) == {"state", "paused", "emotion", "last_transcript", "last_reply",
                           "last_timings", "knowledge_base", "models", "version", "problems"}
    assert status["problems"] == {}


def test_pause_resume_interrupt_reload(assistant: ServiceProcess) -> None:
    env = assistant.bus.env
    assert run_cli(env, "pause").returncode == 0
    assert _prop(assistant, "Paused") is True and _prop(assistant, "State") == "paused"
    assert run_cli(env, "resume").returncode == 0
    assert _prop(assistant, "Paused") is False and _prop(assistant, "State") == "listening"
    for command in ("interrupt", "reload"):
        out = run_cli(env, command)
        assert out.returncode == 0, out.stderr
    assert run_cli(env, "interrupt").stdout.strip() == "nothing to interrupt (the service was listening)"


def test_an_interrupted_ask_has_its_own_exit_code(assistant: ServiceProcess) -> None:
    env = assistant.bus.env
    ask = subprocess.Popen([str(SOTTOVOCE), "ask", "Tell me a long story about a dragon and a knight."],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _prop(assistant, "State") in ("thinking", "speaking"), 60, "the reply under way")
        done = run_cli(env, "interrupt")
        assert done.returncode == 0 and done.stdout.strip() == "interrupted", done
        _, err = ask.communicate(timeout=60)
    finally:
        if ask.poll() is None:
            ask.kill()
    assert ask.returncode == EXIT_INTERRUPTED, (ask.returncode, err)
    assert "cut short" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_kb_status_comes_from_the_running_service(assistant: ServiceProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**assistant.bus.env, "HOME": str(tmp_path)}          # no index of its own here
    out = run_cli(env, "kb", "status", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    prop = _prop(assistant, "KnowledgeBase")
    assert info["source"] == "the running service" and "indexing" not in out.stderr, (info, out.stderr)
    assert info["documents"] == prop["documents"]["data"] > 0 and info["chunks"] == prop["chunks"]["data"]
    assert not (tmp_path / ".local").exists()                   # nothing embedded or written locally


def test_emotion(assistant: ServiceProcess) -> None:
    env = assistant.bus.env
    out = run_cli(env, "emotion", "humorous", "0.9")
    assert out.returncode == 0, out.stderr
    assert _prop(assistant, "Emotion") == ["humorous", 0.9]
    assert run_cli(env, "emotion", "serious").returncode == 0          # keeps the intensity
    assert _prop(assistant, "Emotion") == ["serious", 0.9]
    for args, hint in ((("grumpy",), "unknown emotion 'grumpy'"), (("calm", "1.5"), "0 to 1")):
        out = run_cli(env, "emotion", *args)
        assert out.returncode == EXIT_BAD_ARG, out
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("sottovoce: ")
        assert hint in out.stderr
    assert _prop(assistant, "Emotion") == ["serious", 0.9]
    run_cli(env, "emotion", "neutral", "0.5")


def test_say_and_reindex(assistant: ServiceProcess) -> None:
    env = assistant.bus.env
    out = run_cli(env, "say", "The", "kettle", "is", "ready.")
    assert out.returncode == 0, out.stderr
    out = run_cli(env, "say", "x" * 2001)
    assert out.returncode == EXIT_BAD_ARG and "2000" in out.stderr
    out = run_cli(env, "reindex", "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    kb = json.loads(out.stdout)
    assert kb["documents"] == 3
    assert kb == {k: v["data"] for k, v in _prop(assistant, "KnowledgeBase").items()}


def test_watch_follows_signals_until_ctrl_c(assistant: ServiceProcess) -> None:
    env = assistant.bus.env
    watch = subprocess.Popen([str(SOTTOVOCE), "watch", "--json"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[dict[str, Any]] = []
    seen = threading.Condition()

    def read() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            with seen:
                lines.append(json.loads(line))
                seen.notify_all()

    threading.Thread(target=read, daemon=True).start()

    def wait_for(signal_name: str, args: list[Any]) -> None:
        with seen:
            ok = seen.wait_for(lambda: {"signal": signal_name, "args": args} in lines, 20)
        assert ok, f"watch printed no {signal_name} {args}: {lines}"

    try:
        wait_for("StateChanged", ["listening"])      # the current state, first
        assert run_cli(env, "pause").returncode == 0
        wait_for("StateChanged", ["paused"])
        assert run_cli(env, "resume").returncode == 0
        wait_for("StateChanged", ["listening"])
        with seen:
            assert any(ln.get("signal") == "PropertiesChanged" and ln["changed"].get("Paused") is True
                       for ln in lines)
        watch.send_signal(signal.SIGINT)
        watch.wait(30)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0


def test_remote_ask_uses_the_running_service(assistant: ServiceProcess,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", assistant.bus.address)
    answer = remote_ask("What does the Skerrimore lamp flash?")
    assert answer is not None
    reply, sources, timings = answer
    assert reply.strip() and "skerrimore_lighthouse.md" in sources
    assert _prop(assistant, "LastReply") == reply
    assert timings == _prop(assistant, "LastTimings") and timings["first_audio_s"] > 0
    # The CLI's `ask --json` goes through the service too, and prints its timings.
    out = run_cli(assistant.bus.env, "ask", "--json", "How", "tall", "is", "Skerrimore", "lighthouse?",
                  timeout=120)
    assert out.returncode == 0, out.stderr
    asked = json.loads(out.stdout)
    assert asked["timings"] == _prop(assistant, "LastTimings") and asked["timings"]["total_s"] > 0
    assert _prop(assistant, "LastTranscript") == "How tall is Skerrimore lighthouse?"
    out = run_cli(assistant.bus.env, "status")
    assert "last timings:    first audio " in out.stdout and "retrieval" in out.stdout
    with pytest.raises(BadArgumentError, match="empty"):
        remote_ask("  ")


def test_service_absent(empty_bus: PrivateBus, monkeypatch: pytest.MonkeyPatch,
                        tmp_path: Any) -> None:
    no_bus = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
    for env, commands in ((empty_bus.env, (["status"], ["emotion", "calm"], ["say", "hi"], ["watch"])),
                          (no_bus, (["pause"], ["watch"]))):
        for args in commands:
            out = run_cli(env, *args)
            assert out.returncode == EXIT_NO_SERVICE, (args, out)
            assert out.stderr == NOT_RUNNING + "\n" and out.stdout == ""
    for env in (empty_bus.env, no_bus):
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", env["DBUS_SESSION_BUS_ADDRESS"])
        assert remote_ask("Is anyone there?") is None
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))      # -> unix:path=$XDG_RUNTIME_DIR/bus
    assert remote_ask("Is anyone there?") is None
