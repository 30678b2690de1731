"""systemd integration without a systemd: the installed units verify, sd_notify datagrams
arrive on a socket the test binds, and a hung event loop stops the watchdog pings.

Never starts a systemd user manager (../shared/RECIPES.md section 4).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from daemon.cli import service_install
from daemon.errors import EXIT_CONFIG
from daemon.service.dbus_service import BUS_NAME
from daemon.service.logsetup import setup_logging
from daemon.service.notify import Notifier, socket_notify
from tests.fixtures_dbus import (
    SOTTOVOCE, SOTTOVOCED, NotifyListener, PrivateBus, ServiceProcess, busctl, make_service_home,
    start_private_bus, start_sottovoced,
)


def _recv_all(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


# ------------------------------------------------------------------- sd_notify
def test_notifier_sends_each_state_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        env = {"NOTIFY_SOCKET": str(path)}
        notifier = Notifier(env=env)          # a custom env: the built-in datagram sender
        assert notifier.status("loading   the\nmodels")
        assert notifier.ready() and notifier.watchdog() and notifier.stopping()
        assert _recv_all(sock) == ["STATUS=loading the models", "READY=1", "WATCHDOG=1",
                                   "STOPPING=1"]


def test_notifier_uses_systemd_python_with_the_real_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("systemd.daemon", reason="systemd-python is an optional extra")
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert Notifier().ready()
        assert _recv_all(sock) == ["READY=1"]


def test_abstract_notify_socket() -> None:
    name = f"sottovoce-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert socket_notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert _recv_all(sock) == ["READY=1"]


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled
    assert not notifier.ready() and notifier.watchdog_interval() is None
    assert not socket_notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})


def test_watchdog_interval_honours_usec_and_pid() -> None:
    mine = str(os.getpid())
    assert Notifier(env={"WATCHDOG_USEC": "3000000"}).watchdog_interval() == 3.0
    assert Notifier(env={"WATCHDOG_USEC": "500000", "WATCHDOG_PID": mine}).watchdog_interval() == 0.5
    assert Notifier(env={"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier(env={"WATCHDOG_USEC": "soon"}).watchdog_interval() is None


def test_a_hung_event_loop_stops_the_watchdog(tmp_path: Path) -> None:
    """Pings come from a task on the loop: while the loop is blocked none may arrive."""
    listener = NotifyListener(tmp_path / "wd.sock")
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "100000"}   # ping every 50 ms
    notifier = Notifier(env=env)

    async def scenario() -> None:
        task = asyncio.create_task(notifier.watchdog_loop())
        await asyncio.to_thread(listener.wait_for, "WATCHDOG=1", 10)
        second = await asyncio.to_thread(listener.wait_for, "WATCHDOG=1", 10,
                                         len(listener.lines()))
        notifier.status("hanging")
        time.sleep(0.6)                 # the hang on purpose: 12 ping periods, loop blocked
        notifier.status("recovered")
        await asyncio.to_thread(listener.wait_for, "STATUS=recovered", 10)
        after = await asyncio.to_thread(listener.wait_for, "WATCHDOG=1", 10,
                                        listener.lines().index("STATUS=recovered"))
        task.cancel()
        assert second >= 1 and after > second

    try:
        asyncio.run(asyncio.wait_for(scenario(), 30))
        lines = listener.lines()
    finally:
        listener.close()
    hang, back = lines.index("STATUS=hanging"), lines.index("STATUS=recovered")
    assert lines[:hang].count("WATCHDOG=1") >= 2
    assert "WATCHDOG=1" not in lines[hang:back]
    assert "WATCHDOG=1" in lines[back:]


def test_service_reports_progress_then_ready_then_watchdog(assistant: ServiceProcess) -> None:
    """The shared real service (started with WATCHDOG_USEC): STATUS= lines while loading,
    READY=1 only once every model is loaded, then watchdog pings."""
    sottovoced = assistant
    notify = sottovoced.notify
    lines = notify.lines()
    ready = lines.index("READY=1")
    loading = [m for m in lines[:ready] if m.startswith("STATUS=")]
    assert len(loading) >= 3, f"expected progress STATUS= lines before READY=1, got {loading}"
    models = busctl(sottovoced.bus, "--json=short", "get-property", BUS_NAME,
                    "/org/sottovoce/Assistant", "org.sottovoce.Assistant1", "Models")
    assert {"vad", "stt", "llm", "tts", "embeddings"} <= set(json.loads(models.stdout)["data"])
    for role in ("vad", "stt", "llm", "tts"):
        assert any(role in m.lower() for m in loading), f"no loading status for {role}: {loading}"
    notify.wait_for("WATCHDOG=1", 10, ready)
    # State changes show up as STATUS= lines too.
    mark = len(notify.lines())
    assert busctl(sottovoced.bus, "call", BUS_NAME, "/org/sottovoce/Assistant",
                  "org.sottovoce.Assistant1", "Pause").returncode == 0
    notify.wait_for("STATUS=state: paused", 10, mark)


def test_service_says_stopping_and_leaves_the_bus(tmp_path: Path) -> None:
    """SIGTERM: STOPPING=1, exit 0, and `sottovoce watch` sees it leave the bus. (A service
    whose VAD model is missing starts in seconds: it stays up in State 'error'.)"""
    bus = start_private_bus(tmp_path / "bus")
    try:
        home = make_service_home(tmp_path / "svc")
        home.write_config(f"vad:\n  model: {tmp_path / 'missing' / 'silero_vad.onnx'}\n")
        service = start_sottovoced(bus, home, tmp_path)
        try:
            state = busctl(bus, "get-property", BUS_NAME, "/org/sottovoce/Assistant",
                           "org.sottovoce.Assistant1", "State")
            assert state.stdout.strip() == 's "error"', state
            _stop_while_watched(bus, service)
        finally:
            service.stop()
    finally:
        bus.stop()


def _stop_while_watched(bus: PrivateBus, service: ServiceProcess) -> None:
    ready = service.notify.lines().index("READY=1")
    watch = subprocess.Popen([str(SOTTOVOCE), "watch", "--exit-when-gone"], env=bus.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().startswith("state: ")   # it is following now
        assert service.stop() == 0, service.log_tail()
        _, err = watch.communicate(timeout=15)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 3 and "left the bus" in err
    assert "STOPPING=1" in service.notify.lines()[ready:]


# ------------------------------------------------------------------- logging
def test_journal_handler_carries_structured_fields() -> None:
    pytest.importorskip("systemd.journal", reason="systemd-python is an optional extra")
    sent: list[tuple[str, dict[str, object]]] = []
    handler = setup_logging("DEBUG", sender=lambda MESSAGE, **fields: sent.append((MESSAGE, fields)))
    try:
        logging.getLogger("daemon.test").warning("turn %d failed", 7, extra={"TURN": 7})
    finally:
        logging.getLogger().removeHandler(handler)
    msg, fields = sent[-1]
    assert msg == "turn 7 failed"
    assert fields["PRIORITY"] == "4" and fields["LOGGER"] == "daemon.test"
    assert fields["SYSLOG_IDENTIFIER"] == "sottovoced" and fields["TURN"] == 7


def test_without_a_journal_logs_go_to_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr("daemon.service.logsetup.JOURNAL_SOCKET", "/nonexistent/journal/socket")
    handler = setup_logging("INFO")
    try:
        assert isinstance(handler, logging.StreamHandler)
        assert logging.getLogger().level == logging.INFO
    finally:
        logging.getLogger().removeHandler(handler)


# ------------------------------------------------------- units and install
def _install_env(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env.update(HOME=str(tmp_path / "home"), XDG_RUNTIME_DIR=str(runtime))
    return env


def test_install_service_writes_units_that_verify(tmp_path: Path) -> None:
    env = _install_env(tmp_path)
    home = Path(env["HOME"])
    out = subprocess.run([str(SOTTOVOCE), "install-service"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    units = home / ".config/systemd/user"
    activation = home / ".local/share/dbus-1/services/org.sottovoce.Assistant.service"
    main, tray = units / "sottovoce.service", units / "sottovoce-tray.service"
    assert f"ExecStart={SOTTOVOCED.absolute()}\n" in main.read_text()
    assert f"ExecStart={SOTTOVOCED.parent.absolute() / 'sottovoce-tray'}\n" in tray.read_text()
    text = activation.read_text()
    assert f"Exec={SOTTOVOCED.absolute()}\n" in text and "SystemdService=sottovoce.service" in text
    assert f"Name={BUS_NAME}\n" in text
    assert (home / ".local/share/sottovoce").is_dir()     # ReadWritePaths= must exist

    verify = subprocess.run(["systemd-analyze", "--user", "verify", str(main), str(tray)],
                            env=env, capture_output=True, text=True, timeout=60)
    ours = [ln for ln in (verify.stdout + verify.stderr).splitlines() if "sottovoce" in ln]
    assert verify.returncode == 0 and not ours, verify.stdout + verify.stderr

    out = subprocess.run([str(SOTTOVOCE), "install-service", "--uninstall"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert not main.exists() and not tray.exists() and not activation.exists()


def test_install_service_runs_the_service_with_the_given_config(tmp_path: Path) -> None:
    """`install-service --config PATH` wrote units without it (and took a missing file)."""
    env = _install_env(tmp_path)
    home = Path(env["HOME"])
    folder = home / "my profiles"
    folder.mkdir(parents=True)
    config = folder / "gpu 100%.yaml"          # a space and a systemd specifier character
    config.write_text("tts:\n  speed: 1.1\n", encoding="utf-8")
    out = subprocess.run([str(SOTTOVOCE), "install-service", "--config", f"{folder.name}/{config.name}"],
                         env=env, cwd=str(home), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    units = home / ".config/systemd/user"
    main, tray = units / "sottovoce.service", units / "sottovoce-tray.service"
    quoted = '"' + str(config).replace("%", "%%") + '"'
    assert f"ExecStart={SOTTOVOCED.absolute()} --config {quoted}\n" in main.read_text()
    assert f"ExecStart={SOTTOVOCED.parent.absolute() / 'sottovoce-tray'} --config {quoted}\n" in tray.read_text()
    activation = home / ".local/share/dbus-1/services/org.sottovoce.Assistant.service"
    assert f"Exec={SOTTOVOCED.absolute()} --config '{config}'\n" in activation.read_text()
    verify = subprocess.run(["systemd-analyze", "--user", "verify", str(main), str(tray)],
                            env=env, capture_output=True, text=True, timeout=60)
    ours = [ln for ln in (verify.stdout + verify.stderr).splitlines() if "sottovoce" in ln]
    assert verify.returncode == 0 and not ours, verify.stdout + verify.stderr

    # A missing or invalid file is refused, with one line, and nothing is written.
    for path in (main, tray, activation):
        path.unlink()
    bad = tmp_path / "bad.yaml"
    bad.write_text("vad:\n  threshold: 7\n", encoding="utf-8")
    for args, what in ((["install-service", "--config", str(tmp_path / "nowhere.yaml")], "not found"),
                       (["--config", str(bad), "install-service"], "vad.threshold")):
        out = subprocess.run([str(SOTTOVOCE), *args], env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == EXIT_CONFIG and len(out.stderr.splitlines()) == 1, out
        assert what in out.stderr and not main.exists() and not activation.exists(), out.stderr
    # Under /tmp the sandboxed service would not see the file (PrivateTmp=yes): said so.
    good = tmp_path / "good.yaml"
    good.write_text("", encoding="utf-8")
    out = subprocess.run([str(SOTTOVOCE), "install-service", "--config", str(good)], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and f"--config {good}" in main.read_text()
    notes = [ln for ln in out.stderr.splitlines() if "PrivateTmp=yes" in ln]
    assert len(notes) == (1 if str(good).startswith("/tmp/") else 0), out.stderr


def test_unit_keys_that_matter() -> None:
    text = (service_install.ROOT / "systemd/sottovoce.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes"):
        assert f"\n{line}\n" in text
    assert "\nWatchdogSec=" in text and "After=sottovoce-llm.service" in text
    tray = (service_install.ROOT / "systemd/sottovoce-tray.service").read_text()
    assert "PartOf=graphical-session.target" in tray
    assert "WantedBy=graphical-session.target" in tray


def test_systemd_analyze_flags_a_broken_unit(tmp_path: Path) -> None:
    """The verify check above can fail: a unit with a missing program does not verify."""
    env = _install_env(tmp_path)
    bad = tmp_path / "broken.service"
    bad.write_text(service_install.render(
        (service_install.ROOT / "systemd/sottovoce.service").read_text(), "ExecStart",
        tmp_path / "no-such-sottovoced"))
    verify = subprocess.run(["systemd-analyze", "--user", "verify", str(bad)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode != 0 and "no-such-sottovoced" in verify.stderr


def test_busctl_is_available() -> None:
    assert shutil.which("busctl") and shutil.which("systemd-analyze")
