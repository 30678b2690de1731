"""D-Bus fixtures: a private dbus-daemon per test session and the real `sottovoced` on it.

The bus is started with ``--fork --print-address --print-pid`` and a minimal config (no
Debian activatable services), and stopped by its PID. The service runs as a subprocess with
``--input none --output FILE.wav`` and a scratch HOME, config, knowledge-base copy and index;
readiness is its own sd_notify READY=1, received on a socket the fixture binds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from daemon.service.dbus_service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.dbus_client import Client, run_async   # noqa: F401  (re-exported for other fixtures)


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOTTOVOCED = BIN / "sottovoced"
SOTTOVOCE = BIN / "sottovoce"
READY_TIMEOUT_S = 120.0

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> None:
    """Wait for ``predicate`` with a deadline (for things that offer no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


# ---------------------------------------------------------------------- the bus
@dataclass
class PrivateBus:
    """A dbus-daemon of our own; ``env`` points clients (busctl, gdbus, dbus-fast) at it."""

    address: str
    pid: int
    folder: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.address}

    def stop(self) -> None:
        if _pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            wait_until(lambda: not _pid_alive(self.pid), 10, "dbus-daemon to exit")


def start_private_bus(folder: Path) -> PrivateBus:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "bus.conf"
    conf.write_text(BUS_CONFIG.format(dir=folder))
    out = subprocess.run(
        ["dbus-daemon", f"--config-file={conf}", "--print-address=1", "--print-pid=1",
         "--fork", "--nopidfile"], capture_output=True, text=True, timeout=15, check=True)
    address, pid = out.stdout.split()[:2]
    return PrivateBus(address, int(pid), folder)


# ------------------------------------------------------------ sd_notify socket
class NotifyListener:
    """A SOCK_DGRAM socket standing in for systemd's NOTIFY_SOCKET; records every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="notify-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self._take(self._sock.recv(4096))
            except socket.timeout:
                continue
            except OSError:
                return

    def _take(self, data: bytes) -> None:
        with self._cond:
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))
            self._cond.notify_all()

    def lines(self) -> list[str]:
        with self._cond:
            return [line for _, line in self.messages]

    def wait_for(self, line: str, timeout: float, after: int = 0,
                 alive: Callable[[], bool] = lambda: True) -> int:
        """Index of the first datagram line equal to ``line`` (or starting with it when it ends
        in '='), at or after index ``after``; gives up early once ``alive()`` is False."""
        def find() -> int | None:
            for i, (_, got) in enumerate(self.messages[after:], after):
                if got == line or (line.endswith("=") and got.startswith(line)):
                    return i
            return None

        deadline = time.monotonic() + timeout
        with self._cond:
            while (found := find()) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not alive():
                    raise AssertionError(
                        f"no {line!r} from sd_notify within {timeout:.0f} s"
                        f"{'' if alive() else ' (the process exited)'}; "
                        f"got {[m for _, m in self.messages][-10:]}")
                self._cond.wait(min(left, 0.5))
            return found

    def close(self) -> None:
        """Stop listening, keeping whatever already arrived (a last STOPPING=1 included)."""
        if self._stop:
            return
        self._stop = True
        self._thread.join(2)
        self._sock.setblocking(False)
        while True:
            try:
                self._take(self._sock.recv(4096))
            except OSError:
                break
        self._sock.close()


# ------------------------------------------------------------------ the service
@dataclass
class ServiceHome:
    """A scratch HOME with a config, a copy of the sample knowledge base and an index folder."""

    home: Path
    config: Path
    kb: Path
    output: Path

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(
            "rag:\n"
            f"  knowledge_base: {self.kb}\n"
            f"  index_dir: {self.home / 'index'}\n" + extra)


def make_service_home(base: Path, kb: Path | None = None) -> ServiceHome:
    """A home, runtime folder and config for one `sottovoced` under ``base``; its knowledge
    base a copy of the sample one, or ``kb`` as it is (which may not exist yet)."""
    home = base / "home"
    if kb is None:
        kb = base / "kb"
        if not kb.exists():
            shutil.copytree(ROOT / "knowledge_base", kb)
    runtime = base / "runtime"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    svc = ServiceHome(home, base / "config.yaml", kb, base / "spoken.wav")
    svc.write_config()
    return svc


@dataclass
class ServiceProcess:
    """A running `sottovoced` and what it reported."""

    proc: subprocess.Popen[bytes]
    home: ServiceHome
    bus: PrivateBus
    notify: NotifyListener
    log: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait; SIGKILL only if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.notify.close()
        return self.proc.returncode


def service_env(bus: PrivateBus, home: ServiceHome, notify: Path | None = None,
                **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "XDG_"))}
    env.update(DBUS_SESSION_BUS_ADDRESS=bus.address, HOME=str(home.home),
               XDG_RUNTIME_DIR=str(home.home.parent / "runtime"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify)
    env.update(extra)
    return env


def start_sottovoced(bus: PrivateBus, home: ServiceHome, tmp: Path, wait_ready: bool = True,
                     extra_args: Sequence[str] = (), **extra_env: str) -> ServiceProcess:
    """Start the real service on ``bus`` (``extra_args`` added to its command line); by default
    wait for its READY=1."""
    notify = NotifyListener(tmp / "notify.sock")
    env = service_env(bus, home, notify.path, **extra_env)
    log = tmp / "sottovoced.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(SOTTOVOCED), "--config", str(home.config), "--input", "none",
             "--output", str(home.output), *extra_args],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp))
    service = ServiceProcess(proc, home, bus, notify, log, env)
    if wait_ready:
        try:
            notify.wait_for("READY=1", READY_TIMEOUT_S, alive=lambda: proc.poll() is None)
        except AssertionError:
            service.stop()
            raise AssertionError("sottovoced did not become ready:\n" + service.log_tail())
    return service


def run_cli(bus_env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the `sottovoce` command line against a bus."""
    return subprocess.run([str(SOTTOVOCE), *args], env=bus_env, capture_output=True, text=True,
                          timeout=timeout)


def busctl(bus: PrivateBus, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``busctl --user ARGS`` on the private bus."""
    return subprocess.run(["busctl", "--user", "--no-pager", *args], env=bus.env,
                          capture_output=True, text=True, timeout=timeout)


def settle(service: ServiceProcess) -> None:
    """Bring the service back to 'listening': not paused, nothing being said."""
    target = (BUS_NAME, OBJECT_PATH, INTERFACE)
    for member in ("Resume", "Interrupt"):
        out = busctl(service.bus, "call", *target, member)
        assert out.returncode == 0, out.stderr
    wait_until(lambda: busctl(service.bus, "get-property", *target, "State").stdout.strip()
               == 's "listening"', 30, "State 'listening'", step=0.1)


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def private_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    bus = start_private_bus(tmp_path_factory.mktemp("bus"))
    yield bus
    bus.stop()


@pytest.fixture(scope="session")
def empty_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    """A bus nobody serves on: the 'service not running' case."""
    bus = start_private_bus(tmp_path_factory.mktemp("emptybus"))
    yield bus
    bus.stop()


@pytest.fixture(scope="session")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> ServiceHome:
    return make_service_home(tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="session")
def sottovoced(private_bus: PrivateBus, service_home: ServiceHome,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One real service for every D-Bus and CLI test of the session."""
    if not SOTTOVOCED.exists():
        pytest.fail(f"{SOTTOVOCED} is missing: install the package (make setup)")
    # WATCHDOG_USEC as systemd would set it: the service pings every second.
    service = start_sottovoced(private_bus, service_home, tmp_path_factory.mktemp("svc"),
                               WATCHDOG_USEC="2000000")
    yield service
    service.stop()


@pytest.fixture
def assistant(sottovoced: ServiceProcess) -> Iterator[ServiceProcess]:
    """The shared service; brought back to 'listening' after the test."""
    yield sottovoced
    settle(sottovoced)
