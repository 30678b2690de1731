"""The real `sottovoced` on a private bus, through a dbus-fast client and through busctl:
every method, property, signal and named error; a second instance is refused."""

from __future__ import annotations

import json
import math
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from dbus_fast import DBusError

from daemon import __version__
from daemon.config import Config
from daemon.errors import EXIT_ALREADY_RUNNING
from daemon.service.dbus_service import BUS_NAME, ERROR_PREFIX, INTERFACE, OBJECT_PATH
from tests.dbus_client import Client, run_async
from tests.fixtures_dbus import (
    SOTTOVOCED, PrivateBus, ServiceProcess, busctl, service_env, wait_until,
)

A = (BUS_NAME, OBJECT_PATH, INTERFACE)
QUESTION = "How tall is Skerrimore Lighthouse?"
LONG_TEXT = " ".join(
    ["The keeper climbed the two hundred and twelve steps of the tower every evening,"
     " trimmed the wick, wound the clockwork and watched the green flash sweep the sea."] * 4)
SAMPLE_DOCS = 3          # files in knowledge_base/


class BusMonitor:
    """`busctl --user monitor --json=short` on the private bus, parsed as it runs."""

    def __init__(self, bus: PrivateBus) -> None:
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            ["busctl", "--user", "monitor", BUS_NAME, "--json=short"], env=bus.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True, name="busctl-monitor").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._cond:
                    self.messages.append(json.loads(line))
                    self._cond.notify_all()

    def wait_signal(self, member: str, data: list[Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for msg in self.messages:
                if msg.get("type") == "signal" and msg.get("member") == member and \
                        (data is None or msg["payload"]["data"] == data):
                    return msg
            return None

        with self._cond:
            if not self._cond.wait_for(lambda: find() is not None, timeout):
                raise AssertionError(f"busctl monitor saw no {member} {data or ''}")
            return find()  # type: ignore[return-value]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def monitor(sottovoced: ServiceProcess) -> Iterator[BusMonitor]:
    mon = BusMonitor(sottovoced.bus)
    # The monitor is attached once it reports our own probe call.
    wait_until(lambda: _probe(sottovoced.bus, mon), 20, "busctl monitor to attach", step=0.2)
    yield mon
    mon.stop()


def _probe(bus: PrivateBus, mon: BusMonitor) -> bool:
    busctl(bus, "get-property", *A, "Version")
    return any(m.get("member") == "Get" for m in mon.messages)


async def _client(service: ServiceProcess) -> Client:
    return await Client.connect(service.bus.address)


# ---------------------------------------------------------------- properties
def test_properties_through_a_client(assistant: ServiceProcess, default_config: Config) -> None:
    async def scenario() -> dict[str, Any]:
        client = await _client(assistant)
        try:
            return await client.get_all()
        finally:
            client.close()

    props = run_async(scenario)
    assert props["State"] == "listening" and props["Paused"] is False
    assert list(props["Emotion"]) == [default_config.emotion.default, default_config.emotion.intensity]
    assert props["Version"] == __version__
    assert {"vad", "stt", "llm", "tts", "embeddings"} <= set(props["Models"])
    kb = {k: v.value for k, v in props["KnowledgeBase"].items()}
    assert kb["documents"] == SAMPLE_DOCS and kb["chunks"] >= SAMPLE_DOCS
    assert kb["last_indexed"] > 0 and kb["failed"] == {}
    assert isinstance(props["LastTranscript"], str) and isinstance(props["LastReply"], str)


def test_properties_through_busctl(assistant: ServiceProcess) -> None:
    types = {"State": "s", "Paused": "b", "Emotion": "(sd)", "LastTranscript": "s",
             "LastReply": "s", "LastTimings": "a{sd}", "KnowledgeBase": "a{sv}", "Models": "a{ss}",
             "Version": "s", "Problems": "a{ss}"}
    for name, sig in types.items():
        out = busctl(assistant.bus, "--json=short", "get-property", *A, name)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert got["type"] == sig, name
    version = json.loads(busctl(assistant.bus, "--json=short", "get-property", *A, "Version").stdout)
    assert version["data"] == __version__


# ------------------------------------------------------------------ methods
def test_pause_and_resume(assistant: ServiceProcess, monitor: BusMonitor) -> None:
    async def scenario() -> None:
        client = await _client(assistant)
        try:
            mark = client.mark()
            await client.call("Pause")
            await client.wait_signal("StateChanged", lambda a: a == ["paused"], mark)
            assert await client.get("Paused") is True and await client.get("State") == "paused"
            assert client.changed(mark) == {"Paused": True, "State": "paused"}
            mark = client.mark()
            await client.call("Resume")
            await client.wait_signal("StateChanged", lambda a: a == ["listening"], mark)
            assert client.changed(mark) == {"Paused": False, "State": "listening"}
        finally:
            client.close()

    run_async(scenario)
    monitor.wait_signal("StateChanged", ["paused"])
    monitor.wait_signal("StateChanged", ["listening"])
    for member in ("Pause", "Resume"):                  # and once more through busctl
        out = busctl(assistant.bus, "call", *A, member)
        assert out.returncode == 0, out.stderr
    assert busctl(assistant.bus, "get-property", *A, "Paused").stdout.strip() == "b false"


def test_set_emotion(assistant: ServiceProcess, default_config: Config) -> None:
    async def scenario() -> None:
        client = await _client(assistant)
        try:
            mark = client.mark()
            await client.call("SetEmotion", "sd", ["cheerful", 0.8])
            await client.wait_signal("PropertiesChanged", lambda a: "Emotion" in a[1], mark)
            assert list(client.changed(mark)["Emotion"]) == ["cheerful", 0.8]
            assert list(await client.get("Emotion")) == ["cheerful", 0.8]
        finally:
            client.close()

    run_async(scenario)
    out = busctl(assistant.bus, "call", *A, "SetEmotion", "sd", "calm", "0.25")
    assert out.returncode == 0, out.stderr
    assert busctl(assistant.bus, "get-property", *A, "Emotion").stdout.split() == ["(sd)", '"calm"', "0.25"]
    busctl(assistant.bus, "call", *A, "SetEmotion", "sd", default_config.emotion.default,
           str(default_config.emotion.intensity))


def test_ask_answers_from_the_knowledge_base(assistant: ServiceProcess, monitor: BusMonitor) -> None:
    async def scenario() -> list[Any]:
        client = await _client(assistant)
        try:
            mark = client.mark()
            reply, sources = await client.call("Ask", "s", [QUESTION])
            assert await client.wait_signal("Transcript", after=mark) == [QUESTION]
            assert await client.wait_signal("Reply", after=mark) == [reply, sources]
            await client.wait_signal("StateChanged", lambda a: a == ["thinking"], mark)
            changed = client.changed(mark)
            assert changed["LastTranscript"] == QUESTION and changed["LastReply"] == reply
            timings = dict(await client.get("LastTimings"))   # set before Ask returns
            assert set(timings) == {"stt_s", "retrieve_s", "llm_first_token_s", "first_audio_s", "total_s"}
            assert timings["stt_s"] == 0 and 0 < timings["retrieve_s"] < timings["total_s"]
            return [reply, sources]
        finally:
            client.close()

    reply, sources = run_async(scenario)
    assert reply.strip() and "skerrimore_lighthouse.md" in sources
    monitor.wait_signal("Transcript", [QUESTION])
    monitor.wait_signal("Reply", [reply, sources])
    # Answered out loud: the reply is being spoken into the --output file.
    wait_until(lambda: assistant.home.output.stat().st_size > 22050, 30, "spoken audio")
    # The same through busctl, JSON out: (s reply, as sources); it cuts the first reply short.
    out = busctl(assistant.bus, "--json=short", "call", *A, "Ask", "s",
                 "When was Skerrimore Lighthouse first lit?", timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["type"] == "sas" and got["data"][0].strip()
    assert "skerrimore_lighthouse.md" in got["data"][1]


def test_say_then_interrupt(assistant: ServiceProcess, monitor: BusMonitor) -> None:
    async def scenario() -> str:
        import asyncio

        client = await _client(assistant)
        try:
            mark = client.mark()
            say = asyncio.ensure_future(client.call("Say", "s", [LONG_TEXT]))
            await client.wait_signal("StateChanged", lambda a: a == ["speaking"], mark, timeout=60)
            await client.call("Interrupt")
            (spoken,) = await client.wait_signal("Interrupted", after=mark)
            await client.wait_signal("StateChanged", lambda a: a == ["listening"], mark)
            try:
                await say
            except DBusError:
                pass            # interrupted while still synthesizing: also fine
            return spoken
        finally:
            client.close()

    spoken = run_async(scenario)
    words = LONG_TEXT.split()
    assert spoken.split() == words[: len(spoken.split())], "spoken part is not a prefix"
    assert len(spoken.split()) < len(words), "nothing was cut off"
    monitor.wait_signal("Interrupted", [spoken])
    for args in (("Say", "s", "Good evening."), ("Interrupt",)):   # through busctl
        out = busctl(assistant.bus, "call", *A, *args)
        assert out.returncode == 0, out.stderr


def test_ask_cut_short_by_interrupt(assistant: ServiceProcess) -> None:
    async def scenario() -> tuple[DBusError, list[Any], dict[str, Any]]:
        import asyncio

        client = await _client(assistant)
        try:
            before = client.mark()
            await client.call("Ask", "s", ["Tell me a joke about a kettle."])     # an earlier reply...
            await client.wait_signal("StateChanged", lambda a: a == ["listening"], before, timeout=60)
            mark = client.mark()                                                   # ...spoken whole
            ask = asyncio.ensure_future(client.call("Ask", "s", ["How do I descale the Zephyr kettle?"]))
            await client.wait_signal("StateChanged", lambda a: a == ["thinking"], mark)
            await client.call("Interrupt")
            with pytest.raises(DBusError) as err:
                await ask
            interrupted = await client.wait_signal("Interrupted", after=mark)
            await client.wait_signal("StateChanged", lambda a: a == ["listening"], mark)
            return err.value, interrupted, await client.get_all()
        finally:
            client.close()

    err, (spoken,), props = run_async(scenario)
    assert err.type == ERROR_PREFIX + "Interrupted" and "cut short" in err.text
    assert isinstance(spoken, str)
    # The pair in status belongs together: not the earlier joke under the new question.
    assert props["LastTranscript"] == "How do I descale the Zephyr kettle?"
    assert props["LastReply"] == spoken
    assert assistant.proc.poll() is None


def test_reindex_announces_the_index(assistant: ServiceProcess, monitor: BusMonitor) -> None:
    async def scenario() -> tuple[list[Any], dict[str, Any]]:
        client = await _client(assistant)
        try:
            mark = client.mark()
            await client.call("Reindex")
            body = await client.wait_signal("IndexUpdated", after=mark, timeout=60)
            kb = {k: v.value for k, v in (await client.get("KnowledgeBase")).items()}
            return body, kb
        finally:
            client.close()

    (documents, chunks), kb = run_async(scenario)
    assert documents == SAMPLE_DOCS == kb["documents"] and chunks == kb["chunks"]
    monitor.wait_signal("IndexUpdated", [documents, chunks])
    out = busctl(assistant.bus, "call", *A, "Reindex", timeout=120)
    assert out.returncode == 0, out.stderr


def test_reload_keeps_the_old_config_on_error(assistant: ServiceProcess, monitor: BusMonitor) -> None:
    home = assistant.home

    async def scenario() -> tuple[str, str, list[Any]]:
        client = await _client(assistant)
        try:
            await client.call("Reload")                 # unchanged file: fine
            home.write_config("emotion:\n  intensity: 7\n")
            mark = client.mark()
            with pytest.raises(DBusError) as err:
                await client.call("Reload")
            signal = await client.wait_signal("Error", after=mark)
            return err.value.type, err.value.text, signal
        finally:
            home.write_config()
            client.close()

    name, text, (code, message) = run_async(scenario)
    assert name == ERROR_PREFIX + "Config" and code == "Config"
    assert "intensity" in text and "intensity" in message
    monitor.wait_signal("Error", [code, message])
    out = busctl(assistant.bus, "call", *A, "Reload")
    assert out.returncode == 0, out.stderr
    assert busctl(assistant.bus, "get-property", *A, "State").stdout.strip() == 's "listening"'


# ------------------------------------------------------------------- errors
BAD_CALLS = [
    ("SetEmotion", "sd", ["grumpy", 0.5], "UnknownEmotion", "cheerful"),
    ("SetEmotion", "sd", ["calm", 1.5], "InvalidArgument", "0 to 1"),
    ("SetEmotion", "sd", ["calm", -0.1], "InvalidArgument", "0 to 1"),
    ("SetEmotion", "sd", ["calm", math.nan], "InvalidArgument", "0 to 1"),
    ("Ask", "s", [""], "InvalidArgument", "empty"),
    ("Ask", "s", ["   \n"], "InvalidArgument", "empty"),
    ("Ask", "s", ["x" * 2001], "InvalidArgument", "2000"),
    ("Say", "s", [""], "InvalidArgument", "empty"),
    ("Say", "s", ["y" * 5000], "InvalidArgument", "2000"),
]


def test_bad_calls_get_named_errors_and_change_nothing(assistant: ServiceProcess) -> None:
    async def scenario() -> tuple[list[tuple[str, str]], dict[str, Any], dict[str, Any]]:
        client = await _client(assistant)
        try:
            before = await client.get_all()
            errors = []
            for member, sig, body, _, _ in BAD_CALLS:
                with pytest.raises(DBusError) as err:
                    await client.call(member, sig, body)
                errors.append((err.value.type, err.value.text))
            return errors, before, await client.get_all()
        finally:
            client.close()

    errors, before, after = run_async(scenario)
    for (name, text), (member, _, _, code, hint) in zip(errors, BAD_CALLS):
        assert name == ERROR_PREFIX + code, (member, name, text)
        assert hint in text and "\n" not in text, (member, text)
    assert after == before and assistant.proc.poll() is None


def test_bad_calls_through_busctl(assistant: ServiceProcess) -> None:
    for args, hint in ((("SetEmotion", "sd", "grumpy", "0.5"), "unknown emotion 'grumpy'"),
                       (("Ask", "s", ""), "empty"), (("Say", "s", "z" * 2001), "2000")):
        out = busctl(assistant.bus, "call", *A, *args)
        assert out.returncode == 1 and out.stderr.startswith("Call failed: "), out
        assert hint in out.stderr


# --------------------------------------------------------- a second instance
def test_second_instance_fails_at_once(assistant: ServiceProcess, tmp_path: Path) -> None:
    env = service_env(assistant.bus, assistant.home)
    out = subprocess.run(
        [str(SOTTOVOCED), "--config", str(assistant.home.config), "--input", "none",
         "--output", str(tmp_path / "second.wav")],
        env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_ALREADY_RUNNING, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("sottovoced:")]
    assert len(lines) == 1 and "already owns org.sottovoce.Assistant" in lines[0]
    assert assistant.proc.poll() is None          # the first one is untouched
    assert busctl(assistant.bus, "get-property", *A, "State").returncode == 0


# ------------------------------------------- the adapter over a controller still starting
def test_calls_while_starting_are_refused_and_the_name_is_released(
        empty_bus: PrivateBus, default_config: Config) -> None:
    """The real controller before its models are loaded (State 'starting'), exported in-process:
    questions get NotReady; a second export is refused; close() gives the name back."""
    from daemon.errors import AlreadyRunningError
    from daemon.service.controller import AssistantController
    from daemon.service.dbus_service import export_on_bus

    async def scenario() -> None:
        controller = AssistantController(default_config, None, on_fatal=lambda exc: None)  # type: ignore[arg-type]
        handle = await export_on_bus(controller, empty_bus.address)
        client = await Client.connect(empty_bus.address)
        try:
            assert await client.get("State") == "starting"
            for member, sig, body in (("Ask", "s", ["Hello?"]), ("Say", "s", ["Hi"]),
                                      ("Reindex", "", [])):
                with pytest.raises(DBusError) as err:
                    await client.call(member, sig, body)
                assert err.value.type == ERROR_PREFIX + "NotReady", member
            with pytest.raises(AlreadyRunningError, match="already owns"):
                await export_on_bus(controller, empty_bus.address)
            mark = client.mark()
            controller.report_error("Device", "the microphone vanished")
            assert await client.wait_signal("Error", after=mark) == ["Device", "the microphone vanished"]
            await client.call("Pause")      # remembered, but the models are still loading
            assert await client.get("State") == "starting" and await client.get("Paused") is True
            await client.call("Resume")
            controller.startup_failed("Model", "the LLM could not be loaded")
            assert await client.get("State") == "error"
            assert await client.get("Problems") == {"startup": "Model: the LLM could not be loaded"}
            await client.call("Resume")     # nothing to listen with: still 'error', and why
            assert await client.get("State") == "error"
            for member, sig, body in (("Ask", "s", ["Hello?"]), ("Say", "s", ["Hi"]),
                                      ("Reindex", "", [])):
                with pytest.raises(DBusError) as err:    # not "still starting": it never will be
                    await client.call(member, sig, body)
                assert err.value.type == ERROR_PREFIX + "NotReady", member
                assert "the LLM could not be loaded" in err.value.text and "Reload" in err.value.text, \
                    err.value.text
        finally:
            await handle.close()
        assert await client.bus_call("NameHasOwner", "s", [BUS_NAME]) == [False]
        client.close()

    run_async(scenario)


# ------------------------------------------------------------- --input FILE at start
def test_an_input_file_that_is_not_audio_is_refused_before_the_models_load(tmp_path: Path) -> None:
    """Text named .wav passed the existence check: every model loaded (State 'listening'
    went out, READY=1 under systemd) before the service exited 4."""
    from daemon.errors import EXIT_BAD_AUDIO
    from tests.fixtures_dbus import make_service_home, start_private_bus, start_sottovoced

    junk = tmp_path / "junk.wav"
    junk.write_text("this is text, not a recording\n" * 20, encoding="utf-8")
    bus = start_private_bus(tmp_path / "bus")
    try:
        home = make_service_home(tmp_path / "svc")
        service = start_sottovoced(bus, home, tmp_path, wait_ready=False, extra_args=["--input", str(junk)])
        try:
            code = service.proc.wait(60)
        finally:
            service.stop()
        log = service.log.read_text(errors="replace")
        assert code == EXIT_BAD_AUDIO, log[-2000:]
        assert f"--input {junk}: not a readable audio file" in log, log[-2000:]
        assert "READY=1" not in service.notify.lines(), service.notify.lines()
        assert "loading" not in log.lower() and "listening" not in log, log[-2000:]
    finally:
        bus.stop()
