"""A virtual desktop for the tray tests: Xvfb, a real tray host, a private session bus.

* Xvfb picks its own display number (``-displayfd``); ``trayer`` is the system-tray host.
* A private ``dbus-daemon`` (tests.fixtures_dbus) is the session bus.
* :class:`BusProbe` is the test's own connection to that bus: it hosts a tiny
  ``org.freedesktop.Notifications`` (GTK wants one, and the tray's notifications land there)
  and watches ``org.sottovoce.Assistant`` (owner and properties) through signals.
* Every process is started here and stopped by its PID.

No ``from __future__ import annotations``: dbus-fast reads the string annotations of the
notification service's methods as D-Bus signatures.
"""

import asyncio
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
from dbus_fast import Message, MessageType, NameFlag
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method

from tests.fixtures_dbus import PrivateBus, start_private_bus

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ARTIFACTS = TESTS / "artifacts"
BIN = Path(sys.executable).parent

ASSISTANT = ("org.sottovoce.Assistant", "/org/sottovoce/Assistant", "org.sottovoce.Assistant1")
_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")

def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds.

    Only for things that announce nothing (X windows, pixels on screen); bus state is
    waited on through signals (:class:`BusProbe`).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a process this module started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class LineLog:
    """The lines a child process writes to one pipe, collected by a thread, waitable."""

    def __init__(self, stream: Any, echo_to: Optional[Path] = None) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._echo = echo_to.open("w", encoding="utf-8") if echo_to else None
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                if self._echo:
                    self._echo.write(line)
                    self._echo.flush()
                self._cond.notify_all()

    def mark(self) -> int:
        """A position: :meth:`wait` looks only at lines written after it."""
        with self._cond:
            return len(self.lines)

    def wait(self, pattern: str, since: int, timeout: float) -> str:
        """The first line after ``since`` matching the regex ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[since:]:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.lines[-15:])
                    raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f} s:\n{tail}")
                self._cond.wait(left)


class _Notifications(ServiceInterface):
    """Just enough of org.freedesktop.Notifications: records what it is asked to show."""

    def __init__(self, received: list, cond: threading.Condition) -> None:
        super().__init__("org.freedesktop.Notifications")
        self._received = received
        self._cond = cond

    @method()
    def Notify(self, app_name: "s", replaces_id: "u", icon: "s", summary: "s", body: "s",
               actions: "as", hints: "a{sv}", timeout: "i") -> "u":
        with self._cond:
            self._received.append((summary, body))
            self._cond.notify_all()
            return len(self._received)

    @method()
    def CloseNotification(self, notification_id: "u"):
        return None

    @method()
    def GetCapabilities(self) -> "as":
        return ["body"]

    @method()
    def GetServerInformation(self) -> "ssss":
        return ["test-notifications", "sottovoce-tests", "1.0", "1.2"]


class BusProbe:
    """The test's connection to the private bus (its own asyncio loop in a thread)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.notifications: list[tuple[str, str]] = []
        self.props: dict[str, Any] = {}
        self.signals: list[tuple[str, list]] = []   # the assistant's own signals, in order
        self.owner = ""
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._bus: Optional[MessageBus] = None
        threading.Thread(target=self._loop.run_forever, name="bus-probe", daemon=True).start()
        self._run(self._connect(), 10)

    def _run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> None:
        bus = await MessageBus(bus_address=self.address).connect()
        self._bus = bus
        bus.export("/org/freedesktop/Notifications", _Notifications(self.notifications, self._cond))
        await bus.request_name("org.freedesktop.Notifications", NameFlag.DO_NOT_QUEUE)
        bus.add_message_handler(self._on_message)
        await self._call(_DBUS, "AddMatch", "s", [
            f"type='signal',member='NameOwnerChanged',arg0='{ASSISTANT[0]}'"])
        await self._call(_DBUS, "AddMatch", "s", [f"type='signal',path='{ASSISTANT[1]}'"])
        reply = await bus.call(Message(destination=_DBUS[0], path=_DBUS[1], interface=_DBUS[2],
                                       member="GetNameOwner", signature="s", body=[ASSISTANT[0]]))
        if reply.message_type == MessageType.METHOD_RETURN:
            await self._owner_changed(reply.body[0])

    async def _call(self, target: tuple, member: str, signature: str = "", body: Any = ()) -> list:
        assert self._bus is not None
        reply = await self._bus.call(Message(destination=target[0], path=target[1], interface=target[2],
                                             member=member, signature=signature, body=list(body)))
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
        return list(reply.body)

    async def _owner_changed(self, owner: str) -> None:
        props: dict[str, Any] = {}
        if owner:
            (raw,) = await self._call((owner, ASSISTANT[1], "org.freedesktop.DBus.Properties"),
                                      "GetAll", "s", [ASSISTANT[2]])
            props = {k: v.value for k, v in raw.items()}
        with self._cond:
            self.owner, self.props = owner, props
            self._cond.notify_all()

    def _on_message(self, message: Message) -> None:
        if message.message_type != MessageType.SIGNAL:
            return
        if message.member == "NameOwnerChanged":
            self._loop.create_task(self._owner_changed(message.body[2]))
        elif message.member == "PropertiesChanged" and message.body[0] == ASSISTANT[2]:
            with self._cond:
                self.props.update({k: v.value for k, v in message.body[1].items()})
                self._cond.notify_all()
        elif message.interface == ASSISTANT[2]:
            with self._cond:
                self.signals.append((message.member or "", list(message.body)))
                self._cond.notify_all()

    def wait_until(self, check: Callable[["BusProbe"], bool], timeout: float, what: str) -> None:
        """Wait (on bus signals) until ``check(self)`` holds."""
        with self._cond:
            if not self._cond.wait_for(lambda: check(self), timeout):
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                     f"owner={self.owner!r} props={self.props!r}")

    def wait_notification(self, check: Callable[[tuple[str, str]], bool], since: int,
                          timeout: float) -> tuple[str, str]:
        """The first notification after index ``since`` for which ``check`` holds."""
        found: list[tuple[str, str]] = []

        def seen() -> bool:
            found[:] = [n for n in self.notifications[since:] if check(n)]
            return bool(found)

        with self._cond:
            if not self._cond.wait_for(seen, timeout):
                raise AssertionError(f"no matching notification in {timeout:.0f} s: {self.notifications}")
        return found[0]

    def call_assistant(self, member: str, signature: str = "", body: Any = ()) -> list:
        return self._run(self._call(ASSISTANT, member, signature, body), 30)

    def close(self) -> None:
        if self._bus is not None:
            self._loop.call_soon_threadsafe(self._bus.disconnect)
        self._loop.call_soon_threadsafe(self._loop.stop)


class Desktop:
    """Xvfb + trayer + private bus; helpers to find windows, click, and take screenshots."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._procs: list[subprocess.Popen] = []
        self.width, self.height = 640, 400  # room for the tray and its menus
        self.bus: Optional[PrivateBus] = None
        self.probe: Optional[BusProbe] = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.bus = start_private_bus(self.folder / "bus")
        self.bus_address = self.bus.address
        self.display = self._start_xvfb()
        self.env = self._environment()
        self.probe = BusProbe(self.bus_address)
        tray_host = subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--SetDockType", "true",
             "--widthtype", "request", "--height", "24", "--transparent", "true",
             "--alpha", "0", "--tint", "0xf0f0f0"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=(ARTIFACTS / "trayer.log").open("w"))
        self._procs.append(tray_host)
        # trayer's panel: instance "panel", class "trayer".
        self.tray_host = wait_for(lambda: self.find_windows("trayer", "--class"), 20, "trayer's panel")[0]

    def _start_xvfb(self) -> str:
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
                                 "-nolisten", "tcp"], pass_fds=(write_fd,),
                                stdout=subprocess.DEVNULL, stderr=(ARTIFACTS / "xvfb.log").open("w"))
        os.close(write_fd)
        self._procs.append(proc)
        with os.fdopen(read_fd) as pipe:
            ready, _, _ = select.select([pipe], [], [], 15)
            number = pipe.readline().strip() if ready else ""
        if not number:
            raise AssertionError("Xvfb did not report its display within 15 s")
        return f":{number}"

    def _environment(self) -> dict[str, str]:
        runtime = self.folder / "runtime"
        runtime.mkdir(mode=0o700)
        env = dict(os.environ)
        home = self.folder / "home"
        home.mkdir()
        env.update(DISPLAY=self.display, DBUS_SESSION_BUS_ADDRESS=self.bus_address, NO_AT_BRIDGE="1",
                   HOME=str(home),
                   XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(self.folder / "config"),
                   XDG_DATA_HOME=str(self.folder / "data"), XDG_CACHE_HOME=str(self.folder / "cache"),
                   GDK_BACKEND="x11", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        return env

    def start(self, argv: list[str], log_name: str) -> tuple[subprocess.Popen, LineLog]:
        """Start a child on this desktop and bus; its stderr+stdout are collected."""
        proc = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self._procs.append(proc)
        return proc, LineLog(proc.stdout, ARTIFACTS / log_name)

    def xdotool(self, *args: str) -> str:
        result = subprocess.run(["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=10)
        return result.stdout

    def find_windows(self, name: str, by: str = "--classname") -> list[int]:
        """Visible windows whose instance name (or with by="--class", class) is ``name``."""
        out = self.xdotool("search", "--onlyvisible", by, name)
        return [int(w) for w in out.split()]

    def geometry(self, window: int) -> tuple[int, int, int, int]:
        """Absolute x, y, width, height of ``window``."""
        out = subprocess.run(["xwininfo", "-id", str(window)], env=self.env,
                             capture_output=True, text=True, timeout=10).stdout
        get = lambda key: int(re.search(rf"{key}:\s+(-?\d+)", out).group(1))  # noqa: E731
        return get("Absolute upper-left X"), get("Absolute upper-left Y"), get("Width"), get("Height")

    def screenshot(self, name: Optional[str] = None) -> Any:
        from PIL import ImageGrab

        image = ImageGrab.grab(xdisplay=self.display).convert("RGB")
        if name:
            image.save(ARTIFACTS / name)
        return image

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()
        for proc in reversed(self._procs):
            stop_process(proc)
        if self.bus is not None:
            self.bus.stop()


@pytest.fixture(scope="module")
def desktop() -> Iterator[Desktop]:
    """A fresh virtual desktop (Xvfb, trayer, private bus) for one test module."""
    for tool in ("Xvfb", "trayer", "xdotool", "xwininfo", "dbus-daemon"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make apt)")
    ARTIFACTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sottovoce-x11-") as folder:
        desk = Desktop(Path(folder))
        try:
            yield desk
        finally:
            desk.close()


def program(name: str, module: str) -> list[str]:
    """The console script ``name`` of this environment, else ``python -m module``."""
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]
