"""`sottovoce status | pause | resume | interrupt | emotion | say | reindex | reload | watch`
against the real service on a private bus, and the one-line answer when it is absent; `kb`
against a service started on another folder than the config's; commands waiting for a
service still starting; `watch` across a restart of the service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Any, Iterator

import pytest

from daemon.cli.remote import NOT_RUNNING, remote_ask
from daemon.config import Config
from daemon.errors import (
    EXIT_BAD_ARG, EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_KB, EXIT_MODEL, EXIT_NO_SERVICE,
    BadArgumentError, ModelError, NotReadyError,
)
from tests.fixtures_dbus import (
    SOTTOVOCE, PrivateBus, ServiceProcess, busctl, make_service_home, run_cli, start_private_bus,
    start_sottovoced, wait_until,
)

A = ("org.sottovoce.Assistant", "/org/sottovoce/Assistant", "org.sottovoce.Assistant1")
WAITING = "sottovoce: waiting for the service to finish starting ..."


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
    for args in (["status"], ["emotion", "calm"], ["say", "hi"], ["watch"]):
        out = run_cli(empty_bus.env, *args)
        assert out.returncode == EXIT_NO_SERVICE, (args, out)
        assert out.stderr == NOT_RUNNING + "\n" and out.stdout == ""
    for env in (empty_bus.env, no_bus):
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", env["DBUS_SESSION_BUS_ADDRESS"])
        assert remote_ask("Is anyone there?") is None
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))      # -> unix:path=$XDG_RUNTIME_DIR/bus
    assert remote_ask("Is anyone there?") is None


# ------------------------------------------- kb: the service's folder, not the config's
def _manifest(index_dir: str) -> bytes:
    return (Path(index_dir) / "manifest.json").read_bytes()


def _service_kb(assistant: ServiceProcess, tmp_path: Path) -> tuple[dict[str, str], str, str]:
    """A CLI environment whose config names another folder (the sample one, default.yaml) than
    the service's (a copy, as `sottovoced --kb` would give it); the service's folder and index."""
    env = {**assistant.bus.env, "HOME": str(tmp_path)}          # no config, no index of its own
    prop = {k: v["data"] for k, v in _prop(assistant, "KnowledgeBase").items()}
    folder, index_dir = prop["folder"], prop["index_dir"]
    assert folder == str(assistant.home.kb) and index_dir.startswith(str(assistant.home.home / "index"))
    return env, folder, index_dir


def test_kb_status_names_the_folder_the_service_was_given(assistant: ServiceProcess, tmp_path: Path) -> None:
    env, folder, index_dir = _service_kb(assistant, tmp_path)
    out = run_cli(env, "kb", "status")
    assert out.returncode == 0, out.stderr
    assert f"Knowledge base  {folder}\n" in out.stdout and f"Index           {index_dir}\n" in out.stdout
    info = json.loads(run_cli(env, "kb", "status", "--json").stdout)
    assert (info["folder"], info["index_dir"]) == (folder, index_dir)


def test_kb_search_reads_the_service_index(assistant: ServiceProcess, tmp_path: Path) -> None:
    env, folder, index_dir = _service_kb(assistant, tmp_path)
    before = _manifest(index_dir)
    out = run_cli(env, "kb", "search", "--json", "How tall is Skerrimore lighthouse?", timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["passages"] and "indexing" not in out.stderr, out.stderr
    assert _manifest(index_dir) == before                     # read, not written
    assert not (tmp_path / ".local").exists()                   # nothing embedded here


def test_kb_rebuild_of_the_service_folder_goes_through_the_service(
        assistant: ServiceProcess, tmp_path: Path) -> None:
    env, folder, index_dir = _service_kb(assistant, tmp_path)
    before = _manifest(index_dir)
    for args in ((), ("--kb", folder)):                         # the service rebuilds its own index
        out = run_cli(env, "kb", "rebuild", *args, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"Rebuilt {index_dir}: 3 documents") and \
            out.stdout.rstrip().endswith("(by the running service)"), out.stdout
        assert f"The running service indexes {folder}" in out.stderr, out.stderr
        assert _manifest(index_dir) != before, "the service wrote no new index"
        before = _manifest(index_dir)
    assert not (tmp_path / ".local").exists()
    other = tmp_path / "notes"                                  # another folder: rebuilt here
    other.mkdir()
    (other / "kettle.md").write_text("# Kettle\n\nThe blue kettle whistles at ninety degrees.\n")
    out = run_cli(env, "kb", "rebuild", "--kb", str(other), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1 documents" in out.stdout and "running service" not in out.stdout + out.stderr, out
    assert str(tmp_path / ".local" / "share" / "sottovoce" / "index") in out.stdout
    assert _manifest(index_dir) == before


# What a service from before `folder` and `index_dir` answers for KnowledgeBase.
_OLDER_KB = {"documents": ("u", 7), "chunks": ("u", 21), "last_indexed": ("d", 1.0e9),
             "failed": ("a{ss}", {}), "indexing": ("s", "")}


@pytest.fixture
def older_service(empty_bus: PrivateBus) -> Iterator[None]:
    """The name owned on the empty bus by a connection answering what an older service
    answers for the KnowledgeBase property: no folder, no index_dir (and nothing else)."""
    from dbus_fast import Message, MessageType, Variant
    from dbus_fast.aio import MessageBus

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="older-service", daemon=True)
    thread.start()

    def answer(msg: Message) -> Message | None:
        if (msg.message_type == MessageType.METHOD_CALL and msg.member == "Get"
                and msg.body == [A[2], "KnowledgeBase"]):
            kb = {key: Variant(sig, value) for key, (sig, value) in _OLDER_KB.items()}
            return Message.new_method_return(msg, "v", [Variant("a{sv}", kb)])
        return None

    async def own() -> MessageBus:
        bus = await MessageBus(bus_address=empty_bus.address).connect()
        bus.add_message_handler(answer)
        await bus.request_name(A[0])
        return bus

    bus = asyncio.run_coroutine_threadsafe(own(), loop).result(30)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(bus.disconnect)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        wait_until(lambda: "false" in busctl(empty_bus, "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                             "org.freedesktop.DBus", "NameHasOwner", "s", A[0]).stdout,
                   10, "the name released")


def test_kb_with_an_older_service_keeps_to_the_config_folder(
        older_service: None, empty_bus: PrivateBus, tmp_path: Path) -> None:
    """A guard, not a fix: a service that does not publish its folder leaves `kb` as it was,
    the config's folder labelled with the service's counts, and a rebuild done here."""
    from tests.fixtures_dbus import ROOT

    env = {**empty_bus.env, "HOME": str(tmp_path)}
    out = run_cli(env, "kb", "status", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["folder"] == str(ROOT / "knowledge_base") and info["documents"] == 7, info
    out = run_cli(env, "kb", "rebuild", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Rebuilt {tmp_path / '.local' / 'share' / 'sottovoce' / 'index'}")
    assert "3 documents" in out.stdout and "running service" not in out.stdout + out.stderr, out


# ------------------------------------------- commands wait for a service still starting
def test_ask_waits_while_the_service_is_still_starting(tmp_path: Path) -> None:
    bus = start_private_bus(tmp_path / "bus")
    service = None
    try:
        home = make_service_home(tmp_path / "svc")     # a fresh index: loading takes a while
        service = start_sottovoced(bus, home, tmp_path, wait_ready=False)

        def state() -> str:
            return busctl(bus, "get-property", *A, "State").stdout.strip()

        wait_until(lambda: bool(state()) or service.proc.poll() is not None, 60,
                   "the service on the bus", step=0.05)
        assert state() == 's "starting"'
        res = subprocess.run([str(SOTTOVOCE), "ask", "How", "tall", "is", "Skerrimore", "lighthouse?"],
                             env={**bus.env, "HOME": str(home.home)}, capture_output=True, text=True,
                             timeout=240)
        assert res.returncode == 0, (res.stderr, service.log_tail())
        assert res.stderr.splitlines() == [WAITING], res.stderr
        assert "skerrimore_lighthouse.md" in res.stdout, res.stdout       # answered, from the documents
        assert "How tall is Skerrimore lighthouse?" in busctl(bus, "get-property", *A, "LastTranscript").stdout
    finally:
        if service is not None:
            service.stop()
        bus.stop()


@pytest.fixture
def starting_controller(empty_bus: PrivateBus, default_config: Config) -> Iterator[tuple[Any, Any]]:
    """The real controller before its models are loaded (State 'starting'), exported on the
    empty bus from an event loop of its own (also yielded): it never becomes ready by itself."""
    from daemon.service.controller import AssistantController
    from daemon.service.dbus_service import export_on_bus

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="starting-service", daemon=True)
    thread.start()

    async def export() -> tuple[Any, Any]:
        controller = AssistantController(default_config, None, on_fatal=lambda exc: None)  # type: ignore[arg-type]
        return controller, await export_on_bus(controller, empty_bus.address)

    controller, handle = asyncio.run_coroutine_threadsafe(export(), loop).result(30)
    try:
        yield controller, loop
    finally:
        asyncio.run_coroutine_threadsafe(handle.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_waiting_for_a_start_has_a_deadline_and_a_failed_start_is_named(
        starting_controller: tuple[Any, Any], empty_bus: PrivateBus, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    controller, loop = starting_controller
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", empty_bus.address)
    with pytest.raises(NotReadyError, match="still starting after 1 s"):
        remote_ask("Hello?", wait_s=1.0)
    assert capsys.readouterr().err.splitlines() == [WAITING]
    loop.call_soon_threadsafe(controller.startup_failed, "Model", "the LLM is missing")
    wait_until(lambda: _state(empty_bus) == "error", 10, "State error")
    # A failed start is not waited for, and has the model error's exit code.
    with pytest.raises(ModelError, match="could not start: Model: the LLM is missing") as failed:
        remote_ask("Hello?", wait_s=30.0)
    assert failed.value.exit_code == EXIT_MODEL
    assert capsys.readouterr().err == ""


def _state(bus: PrivateBus) -> str:
    out = busctl(bus, "--json=short", "get-property", *A, "State")
    return str(json.loads(out.stdout)["data"]) if out.returncode == 0 else ""


# ------------------------------------------- watch follows the service across a restart
class _Stream:
    """The lines a subprocess writes to one of its pipes, read as they come."""

    def __init__(self, pipe: IO[str] | None) -> None:
        assert pipe is not None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> None:
        """Until ``count`` lines contain ``text``."""
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(text in ln for ln in self.lines) >= count, timeout)
        assert ok, f"no {count}x {text!r} within {timeout:.0f} s: {self.lines}"


def test_watch_follows_the_service_across_a_restart(tmp_path: Path) -> None:
    """The service stops and a new one takes the name (as systemd's restart does): `watch`
    says so and goes on with the new one; `watch --exit-when-gone` ends with code 3. (A
    service whose VAD model is missing starts in seconds and stays up in State 'error'.)"""
    bus = start_private_bus(tmp_path / "bus")
    home = make_service_home(tmp_path / "svc")
    home.write_config(f"vad:\n  model: {tmp_path / 'missing' / 'silero_vad.onnx'}\n")
    services: list[ServiceProcess] = []
    watchers: list[subprocess.Popen[str]] = []

    def start(name: str) -> None:
        (tmp_path / name).mkdir()
        services.append(start_sottovoced(bus, home, tmp_path / name))

    def watch(*args: str) -> tuple[subprocess.Popen[str], _Stream, _Stream]:
        proc = subprocess.Popen([str(SOTTOVOCE), "watch", *args], env=bus.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watchers.append(proc)
        return proc, _Stream(proc.stdout), _Stream(proc.stderr)

    try:
        start("first")
        follow, out, err = watch()
        out.wait_for("state: error")
        assert services[0].stop() == 0
        err.wait_for("the service left the bus; waiting for it to come back")
        assert follow.poll() is None                    # still following
        start("second")
        err.wait_for("the service is back on the bus")
        out.wait_for("state: ", count=2)                # its state, printed again
        assert busctl(bus, "call", *A, "Pause").returncode == 0
        out.wait_for("changed: Paused=true")            # and its signals followed
        once, once_out, once_err = watch("--exit-when-gone")
        once_out.wait_for("state: error")
        follow.send_signal(signal.SIGINT)
        assert follow.wait(30) == 0
        assert services[1].stop() == 0
        assert once.wait(30) == EXIT_NO_SERVICE
        once_err.wait_for("the service left the bus")
    finally:
        for proc in watchers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for service in services:
            service.stop()
        bus.stop()


# ------------------------------------------- bad input: one line and the right exit code
def _one_line(out: subprocess.CompletedProcess[str], code: int, *hints: str) -> None:
    """``out`` failed with ``code`` and one line on stderr holding every hint."""
    assert out.returncode == code, out
    assert "Traceback" not in out.stderr and out.stderr.startswith("sottovoce: "), out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    for hint in hints:
        assert hint in out.stderr, (hint, out.stderr)


def test_text_that_is_not_utf8_is_refused_in_one_line(assistant: ServiceProcess, tmp_path: Path) -> None:
    """Latin-1 bytes from a terminal or a script: a traceback from dbus-fast or the embedder
    before; now one line naming the argument, exit 8, and the service untouched."""
    from daemon.service.turns import check_text

    env = {**assistant.bus.env, "HOME": str(tmp_path)}
    reply = tmp_path / "r.wav"
    for args, named in (([b"ask", b"caf\xe9?"], "ask: the text is not valid UTF-8 (byte 0xe9)"),
                        ([b"say", b"caf\xe9"], "say: the text"),
                        ([b"emotion", b"calm\xff"], "emotion: the name is not valid UTF-8 (byte 0xff)"),
                        ([b"emotion", b"calm", b"0.\xff"], "emotion: the intensity"),
                        ([b"kb", b"search", b"caf\xe9"], "kb search: the query"),
                        ([b"ask", b"--local", b"caf\xe9?", b"--out", bytes(reply)], "ask: the text"),
                        ([b"ask", b"--emotion", b"calm\xff", b"hi"], "ask: --emotion")):
        out = subprocess.run([bytes(SOTTOVOCE), *args], env=env, capture_output=True, text=True, timeout=120)
        _one_line(out, EXIT_BAD_ARG, named, "check your terminal's encoding")
    assert not reply.exists()
    assert _prop(assistant, "State") == "listening"
    with pytest.raises(BadArgumentError, match="the question is not valid UTF-8"):
        check_text("caf\udce9?", "question")          # as Python keeps the byte 0xe9


def test_a_question_with_no_words_is_refused_as_say_refuses_it(assistant: ServiceProcess) -> None:
    before = _prop(assistant, "LastTranscript")
    out = busctl(assistant.bus, "call", *A, "Ask", "s", "\U0001F600\U0001F600")
    assert out.returncode != 0 and "has no words" in out.stderr, out
    _one_line(run_cli(assistant.bus.env, "ask", "\U0001F600\U0001F600"), EXIT_BAD_ARG,
              "nothing to answer: the question has no words")
    _one_line(run_cli(assistant.bus.env, "ask", "?!"), EXIT_BAD_ARG, "nothing to answer")
    _one_line(run_cli(assistant.bus.env, "say", "\U0001F389"), EXIT_BAD_ARG, "nothing to say")
    assert _prop(assistant, "LastTranscript") == before          # never asked


def test_commands_for_the_service_refuse_config(assistant: ServiceProcess, tmp_path: Path) -> None:
    """`reload --config F` does not make the service use F: refused in one line (exit 2), not
    silently ignored; the commands that use a config keep --config."""
    env, nope = assistant.bus.env, str(tmp_path / "nope.yaml")
    emotion = _prop(assistant, "Emotion")
    _one_line(run_cli(env, "reload", "--config", nope), EXIT_CONFIG,
              "--config is not used by reload: the service re-reads its own file; "
              "restart it with --config to change it")
    for args in (["--config", nope, "emotion", "calm", "0.4"], ["pause", "--config", nope],
                 ["status", "--config", nope], ["--config", nope, "reindex"], ["watch", "--config", nope]):
        command = next(a for a in args if not a.startswith("-") and a != nope)
        _one_line(run_cli(env, *args), EXIT_CONFIG, f"--config is not used by {command}: ")
    assert _prop(assistant, "Emotion") == emotion and _prop(assistant, "Paused") is False
    for command in ("status", "pause", "resume", "reload", "interrupt", "emotion", "say", "reindex", "watch"):
        out = run_cli(env, command, "--help")
        assert out.returncode == 0 and "--config" not in out.stdout, (command, out.stdout)
    for command in (["ask"], ["kb", "status"], ["speak"], ["config", "show"]):
        assert "--config PATH" in run_cli(env, *command, "--help").stdout, command


def test_an_unusable_bus_address_is_named_with_its_reason(tmp_path: Path) -> None:
    """Not "the service is not running": there is no bus to look for it on (exit 3 all the same)."""
    for address, reason in ((f"unix:path={tmp_path}/no-bus", "No such file or directory"),
                            ("garbage", "address did not contain a transport")):
        env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": address}
        for args in (["status"], ["pause"], ["watch"]):
            out = run_cli(env, *args)
            _one_line(out, EXIT_NO_SERVICE, f"cannot reach the D-Bus session bus at {address} (", reason)
            assert out.stdout == ""


def test_reindex_and_kb_rebuild_of_a_missing_folder_exit_7(assistant: ServiceProcess, tmp_path: Path) -> None:
    """The service's folder gone (or a file in its place): exit 7, as `kb search` gives, not
    a summary of nothing with exit 0."""
    env, folder, _index_dir = _service_kb(assistant, tmp_path)
    moved = Path(folder + ".moved")
    os.rename(folder, moved)
    try:
        for args in (["reindex"], ["reindex", "--json"], ["kb", "rebuild"]):
            out = run_cli(env, *args, timeout=120)
            assert out.returncode == EXIT_KB and "Rebuilt" not in out.stdout, (args, out)
            assert out.stderr.splitlines()[-1].startswith(
                f"sottovoce: the service's knowledge base: folder {folder} is missing;"), out.stderr
        Path(folder).write_text("a file where the folder was\n")
        out = run_cli(env, "reindex", timeout=120)
        _one_line(out, EXIT_KB, f"{folder} is not a folder")
    finally:
        if Path(folder).is_file():
            Path(folder).unlink()
        os.rename(moved, folder)
    out = run_cli(env, "reindex", "--json", timeout=120)       # back: every document again
    assert out.returncode == 0 and json.loads(out.stdout)["documents"] == 3, out


def test_kb_rebuild_that_cannot_save_the_index_fails(empty_bus: PrivateBus, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kettle.md").write_text("# Kettle\n\nThe blue kettle whistles at ninety degrees.\n")
    blocker = tmp_path / "index-is-a-file"
    blocker.write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(f"rag:\n  index_dir: {blocker}\n")
    out = run_cli({**empty_bus.env, "HOME": str(tmp_path)}, "--config", str(config), "kb", "rebuild",
                  "--kb", str(notes), timeout=180)
    assert out.returncode == EXIT_KB and "Rebuilt" not in out.stdout, out
    last = out.stderr.splitlines()[-1]
    assert last.startswith(f"sottovoce: the index of {notes} was rebuilt but could not be saved to {blocker}/"), last
    assert "Not a directory" in last and "Traceback" not in out.stderr


def test_status_and_watch_escape_control_characters(assistant: ServiceProcess) -> None:
    """A question sent over D-Bus with terminal escapes and a newline: `status` and `watch`
    show them escaped, never raw (they would recolour the terminal or fake a line)."""
    question = "\x1b[31mHow tall\x9b2J is Skerrimore lighthouse?\nlast reply:      faked"
    watch = subprocess.Popen([str(SOTTOVOCE), "watch"], env=assistant.bus.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = _Stream(watch.stdout)
        lines.wait_for("state: ")
        out = busctl(assistant.bus, "--timeout=120", "call", *A, "Ask", "s", question, timeout=150)
        assert out.returncode == 0, out.stderr
        lines.wait_for("transcript: ")
        watch.send_signal(signal.SIGINT)
        watch.wait(30)
    finally:
        if watch.poll() is None:
            watch.kill()
    shown = "\\x1b[31mHow tall\\x9b2J is Skerrimore lighthouse?\\nlast reply:      faked"
    assert f"transcript: {shown}" in lines.lines, lines.lines
    assert any(ln.startswith("changed: ") and 'LastTranscript="\\u001b[31mHow tall\\u009b2J' in ln
               for ln in lines.lines), lines.lines          # JSON's own escapes, not doubled
    status = run_cli(assistant.bus.env, "status")
    assert status.returncode == 0, status.stderr
    assert f"last transcript: {shown}\n" in status.stdout, status.stdout
    for printed in ("\n".join(lines.lines), status.stdout):
        assert not any(ch in printed for ch in "\x1b\x9b") and "\nlast reply:      faked" not in printed
    as_json = run_cli(assistant.bus.env, "status", "--json").stdout
    assert "\x9b" not in as_json and json.loads(as_json)["last_transcript"] == question


def test_kb_status_when_the_service_could_not_start(tmp_path: Path) -> None:
    """Not an empty knowledge base "as the running service has them": say that the service
    could not start, and read its folder here. (A missing VAD model: the start fails at once.)"""
    bus = start_private_bus(tmp_path / "bus")
    home = make_service_home(tmp_path / "svc")
    home.write_config(f"vad:\n  model: {tmp_path / 'missing' / 'silero_vad.onnx'}\n")
    service = start_sottovoced(bus, home, tmp_path)
    try:
        wait_until(lambda: _state(bus) == "error", 30, "State error")
        out = run_cli({**bus.env, "HOME": str(home.home)}, "kb", "status", timeout=180)
        assert out.returncode == 0, out.stderr
        assert out.stderr.startswith("sottovoce: the service could not start (Model: "), out.stderr
        assert f"reading its knowledge base {home.kb} here instead" in out.stderr
        assert f"Knowledge base  {home.kb}\n" in out.stdout and "Documents       3 (" in out.stdout, out.stdout
        assert "running service" not in out.stdout
    finally:
        service.stop()
        bus.stop()
