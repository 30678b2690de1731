"""Reload (D-Bus Reload(), `sottovoce reload`, SIGHUP) on a real `sottovoced`: the command
line's settings stay in force, what only a restart applies is named to the caller (compared
with what the service started with), and a start whose models failed is tried again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from daemon.errors import EXIT_MODEL
from tests.fixtures_dbus import PrivateBus, ServiceHome, ServiceProcess, make_service_home, run_cli
from tests.fixtures_service import BusThread, service_with_client

MOON = "The moon base is called Selene Nine.\n"
BASE = "conversation:\n  history_file: ''\n"


@dataclass
class KbService:
    """`sottovoced --kb DIR` whose config names another, missing, knowledge-base folder."""

    service: ServiceProcess
    home: ServiceHome
    bus: PrivateBus
    client: BusThread

    def knowledge_base(self) -> dict[str, object]:
        return {k: v.value for k, v in self.client.get("KnowledgeBase").items()}

    def reload(self, config: str) -> list[str]:
        """Write ``config`` (after BASE), run `sottovoce reload`; its stdout lines."""
        self.home.write_config(BASE + config)
        out = run_cli(self.bus.env, "reload")
        assert out.returncode == 0, out.stderr + self.service.log_tail()
        return out.stdout.splitlines()


@pytest.fixture(scope="module")
def kb_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KbService]:
    tmp = tmp_path_factory.mktemp("reload")
    kb_alt = tmp / "kbalt"
    kb_alt.mkdir()
    (kb_alt / "m.txt").write_text(MOON, encoding="utf-8")
    home = make_service_home(tmp, kb=tmp / "kb_of_the_config")    # never created
    home.write_config(BASE)
    with service_with_client(tmp, home, ("--kb", str(kb_alt))) as (bus, service, client):
        yield KbService(service, home, bus, client)


def test_reload_keeps_the_knowledge_base_given_on_the_command_line(kb_service: KbService) -> None:
    """A reload re-read the file without --kb: the knowledge base became the config's folder."""
    svc = kb_service
    assert svc.knowledge_base()["documents"] == 1, svc.service.log_tail()
    mark = svc.service.log.read_text(errors="replace")
    svc.home.write_config(BASE + "tts:\n  speed: 1.1\n")
    svc.client.call("Reload")
    log = svc.service.log.read_text(errors="replace")[len(mark):]
    assert "reload: rebuilding tts\n" in log, log
    info = svc.knowledge_base()
    assert info["documents"] == 1 and "." not in info["failed"], (info, log)
    reply, sources = svc.client.call("Ask", "s", ["What is the moon base called?"])
    assert sources == ["m.txt"], (reply, sources, svc.service.log_tail())


def test_reload_applies_the_emotion_and_names_what_needs_a_restart(kb_service: KbService) -> None:
    """emotion.default/intensity were not applied; audio changes were only logged."""
    svc = kb_service
    # audio.output is --output's on the command line: the file's value does not matter.
    lines = svc.reload("emotion:\n  default: cheerful\n  intensity: 0.7\n"
                       "audio:\n  output: elsewhere\n  reconnect_s: 3\n")
    assert lines[0] == "configuration reloaded" and len(lines) == 2, lines
    assert "restart the service for audio.reconnect_s to take effect" in lines[1], lines
    assert "audio.output" not in lines[1], lines
    assert list(svc.client.get("Emotion")) == ["cheerful", 0.7]

    # An emotion chosen over D-Bus is the user's: a new default does not replace it. The
    # reconnect delay is still the one the service started with: still named.
    svc.client.call("SetEmotion", "sd", ["calm", 0.3])
    lines = svc.reload("emotion:\n  default: serious\naudio:\n  reconnect_s: 3\n")
    assert lines[0] == "configuration reloaded" and "audio.reconnect_s" in lines[1], lines
    assert list(svc.client.get("Emotion")) == ["calm", 0.3]


def test_restart_notes_compare_with_what_the_service_runs_with(kb_service: KbService) -> None:
    """The notes compared with the previous reload: a change reverted was named again, and
    a change still pending was forgotten after an unrelated reload."""
    svc = kb_service
    lines = svc.reload("service:\n  watchdog: false\n")
    assert len(lines) == 2 and "for service.watchdog to take effect" in lines[1], lines
    assert svc.reload("") == ["configuration reloaded"]        # back to what is in force
    lines = svc.reload("audio:\n  reconnect_s: 2.5\n")
    assert len(lines) == 2 and "for audio.reconnect_s to take effect" in lines[1], lines
    lines = svc.reload("audio:\n  reconnect_s: 2.5\ntts:\n  speed: 1.05\n")   # unrelated change
    assert len(lines) == 2 and "for audio.reconnect_s to take effect" in lines[1], lines
    assert svc.reload("") == ["configuration reloaded"]


def test_a_reload_loads_the_models_a_failed_start_could_not(tmp_path: Path) -> None:
    """After a start whose models could not be loaded (State error, Problems startup), a
    reload said "configuration reloaded" and changed nothing; `ask` waited for a service
    that was not starting and exited 1."""
    home = make_service_home(tmp_path, kb=tmp_path / "kb_missing")      # no knowledge base: quick
    env_home = {"HOME": str(home.home)}
    broken = "stt:\n  model: {}\n"
    home.write_config(BASE + broken.format(tmp_path / "nomodel"))
    with service_with_client(tmp_path, home) as (bus, service, client):
        env = {**bus.env, **env_home}
        assert client.get("State") == "error", service.log_tail()
        assert "nomodel" in dict(client.get("Problems"))["startup"]

        asked = run_cli(env, "ask", "hello", timeout=30)
        assert asked.returncode == EXIT_MODEL, (asked.returncode, asked.stderr)
        assert asked.stderr.count("\n") == 1 and "could not start: Model: " in asked.stderr, asked.stderr
        assert "nomodel" in asked.stderr and "waiting" not in asked.stderr, asked.stderr

        # Still broken, another way: the Reload call fails (exit 6) and the new reason is shown.
        home.write_config(BASE + broken.format(tmp_path / "othermodel"))
        out = run_cli(env, "reload", timeout=120)
        assert out.returncode == EXIT_MODEL and "othermodel" in out.stderr, (out.returncode, out.stderr)
        assert client.get("State") == "error"
        assert "othermodel" in dict(client.get("Problems"))["startup"], service.log_tail()

        mark = client.mark()
        home.write_config(BASE)
        out = run_cli(env, "reload", timeout=120)
        assert out.returncode == 0 and out.stdout == "configuration reloaded\n", (out, service.log_tail())
        assert client.states(mark)[-2:] == ["starting", "listening"], client.states(mark)
        assert dict(client.get("Problems")) == {}
        asked = run_cli(env, "ask", "Say hello.", timeout=120)
        assert asked.returncode == 0 and asked.stdout.strip(), (asked, service.log_tail())
        assert client.get("LastReply").strip() == asked.stdout.strip()


def test_a_voice_that_fails_to_load_on_reload_is_named(kb_service: KbService, tmp_path: Path) -> None:
    """The fallback (espeak) took over with only a log line: `reload` said "configuration
    reloaded" and nothing else, and the Models property was not announced as changed."""
    svc = kb_service
    lines = svc.reload(f"tts:\n  voice: {tmp_path / 'missing.onnx'}\n")
    assert lines[0] == "configuration reloaded" and len(lines) == 2, lines
    assert "tts.engine piper could not be loaded" in lines[1] and "speaking with espeak" in lines[1], lines
    assert dict(svc.client.get("Models"))["tts"] == "espeak"
    assert svc.reload("") == ["configuration reloaded"]          # the voice back: no note
    assert dict(svc.client.get("Models"))["tts"] == "piper"


def test_a_config_that_never_ends_is_refused_while_the_service_serves(kb_service: KbService) -> None:
    """A 9-level "billion laughs" file was checked on the event loop for minutes: no D-Bus
    call was answered meanwhile (and systemd's watchdog would have killed the service)."""
    svc = kb_service
    items = ["&l0 [x, x, x, x, x, x, x, x, x, x]"]
    items += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, 9)]
    svc.home.write_config(BASE + "persona:\n  name: [" + ", ".join(items) + "]\n")
    out = run_cli(svc.bus.env, "reload", timeout=60)
    assert out.returncode == 2 and "expand to more than" in out.stderr, out.stderr + svc.service.log_tail()
    assert svc.client.get("State") == "listening"
    assert svc.reload("") == ["configuration reloaded"]
