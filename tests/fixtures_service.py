"""The live service on the virtual sound card: a real `sottovoced` subprocess, its log, its bus.

:func:`start_live_service` starts `sottovoced` on the PulseAudio rig (``tests.fixtures_pulse``)
and a private D-Bus bus (``tests.fixtures_dbus``), with a scratch HOME, config, history file
and a copy of the sample knowledge base. Its log lines are collected with their arrival time,
so tests wait on them with deadlines. :class:`BusThread` is a D-Bus client running on its own
event loop thread, so synchronous tests can play audio and wait for signals side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from bench.util import espeak_wav
from tests.fixtures_dbus import SOTTOVOCED, Client, PrivateBus, start_private_bus
from tests.fixtures_pulse import PulseRig

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 150.0

# Questions the service answers reliably from the sample knowledge base at temperature 0,
# checked end to end: espeak-ng speech, Whisper tiny.en with the knowledge base's hotwords
# (it hears "K-rimore" as often as "Skerrimore"), retrieval, the 135M LLM. Not "How many
# steps...?": the LLM's repeat penalty turns the note's "212" into "213" now and then.
FLASH_Q = "How often does the Skerrimore light flash?"
FLASH_FACT = ("7 seconds", "seven seconds")
FIRST_LIT_Q = "When was Skerrimore Lighthouse first lit?"
FIRST_LIT_FACT = ("1873", "eighteen seventy")
TALL_Q = "How tall is Skerrimore lighthouse?"
TALL_FACT = ("38", "thirty-eight", "thirty eight")
LONG_Q = "Tell me everything about Skerrimore lighthouse."
SPEAK_WPM = 140


def holds(text: str, fact: tuple[str, ...]) -> bool:
    """True when ``text`` contains one of the acceptable spellings of a fact."""
    low = text.lower().replace(",", "")
    return any(f.lower() in low for f in fact)


def similar(heard: str, said: str) -> float:
    """How alike two texts sound, 0-1, comparing letters only ("scare more" ~ "Skerrimore")."""
    import difflib

    def letters(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    return difflib.SequenceMatcher(None, letters(heard), letters(said)).ratio()


# ---------------------------------------------------------------------- the process
@dataclass
class LiveService:
    """A running `sottovoced`, its files, and every log line with its arrival time."""

    proc: subprocess.Popen[str]
    base: Path
    config: Path
    history: Path
    env: dict[str, str] = field(repr=False)
    lines: list[tuple[float, str]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        """Position in the log; pass it as ``after`` to look only at later lines."""
        with self._cond:
            return len(self.lines)

    def text(self, after: int = 0) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines[after:])

    def wait_line(self, pattern: str, timeout: float, after: int = 0) -> tuple[float, str]:
        """The first log line (at or after ``after``) matching the regex; its arrival time."""
        rx = re.compile(pattern)

        def find() -> tuple[float, str] | None:
            for t, line in self.lines[after:]:
                if rx.search(line):
                    return t, line
            return None

        with self._cond:
            self._cond.wait_for(lambda: find() is not None or self.proc.poll() is not None, timeout)
            hit = find()
        if hit is None:
            why = f"exited with {self.proc.returncode}" if self.proc.poll() is not None else \
                f"no such line within {timeout:.0f} s"
            raise AssertionError(f"sottovoced log: /{pattern}/: {why}; last lines:\n{self.tail()}")
        return hit

    def tail(self, n: int = 25) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines[-n:])

    def history_turns(self) -> list[tuple[str, str]]:
        import json

        if not self.history.exists():
            return []
        return [tuple(t) for t in json.loads(self.history.read_text())["turns"]]  # type: ignore[misc]

    def signal_and_wait(self, sig: int, timeout: float = 20.0) -> tuple[int, float]:
        """Send ``sig``; return (exit code, seconds until the process was gone)."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"sottovoced ignored signal {sig} for {timeout} s")
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass(frozen=True)
class ServiceFiles:
    """What every live service of the run shares: a knowledge-base copy and its index."""

    root: Path
    kb: Path
    index: Path


def write_config(path: Path, files: ServiceFiles, history: Path, extra: str = "") -> None:
    """The test config: temperature 0 (repeatable answers), quick device reconnects."""
    path.write_text(
        "audio:\n  reconnect_s: 0.5\n"
        f"rag:\n  knowledge_base: {files.kb}\n  index_dir: {files.index}\n"
        "llm:\n  temperature: 0.0\n  max_tokens: 48\n"
        # A short history budget: the 135M model copies earlier replies when given many.
        f"conversation:\n  max_turns: 3\n  max_tokens: 60\n  history_file: {history}\n" + extra)


def service_env(rig: PulseRig, bus: PrivateBus | None, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "XDG_", "DBUS_"))}
    runtime = home.parent / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env.update(rig.subprocess_env({}), HOME=str(home), XDG_RUNTIME_DIR=str(runtime),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
               DBUS_SESSION_BUS_ADDRESS=bus.address if bus else "unix:path=/nonexistent/bus")
    return env


def launch(rig: PulseRig, bus: PrivateBus | None, files: ServiceFiles, base: Path,
           args: tuple[str, ...] = (), extra_config: str = "", path_first: Path | None = None) -> LiveService:
    """Start `sottovoced` (not waiting for anything); programs in ``path_first`` come first
    on its PATH."""
    if not SOTTOVOCED.exists():
        pytest.fail(f"{SOTTOVOCED} is missing: install the package (make setup)")
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    config, history = base / "config.yaml", base / "history.json"
    write_config(config, files, history, extra_config)
    env = service_env(rig, bus, home)
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen([str(SOTTOVOCED), "--config", str(config), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, cwd=str(base))
    service = LiveService(proc, base, config, history, env)
    threading.Thread(target=service._read, name="sottovoced-log", daemon=True).start()
    return service


def start_live_service(rig: PulseRig, bus: PrivateBus | None, files: ServiceFiles, base: Path,
                       args: tuple[str, ...] = (), extra_config: str = "",
                       path_first: Path | None = None) -> LiveService:
    """Start `sottovoced` and wait until its microphone is open and it listens."""
    service = launch(rig, bus, files, base, args, extra_config, path_first)
    try:
        service.wait_line(r"microphone open", START_TIMEOUT_S)
    except AssertionError:
        service.kill()
        raise
    return service


# ---------------------------------------------------------------------- D-Bus client
class BusThread:
    """A :class:`tests.fixtures_dbus.Client` on its own loop thread, for synchronous tests."""

    def __init__(self, address: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bus-client", daemon=True)
        self._thread.start()
        self.client: Client = self._run(Client.connect(address), 30)

    def _run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, member: str, signature: str = "", body: list[Any] | None = None,
             timeout: float = 120) -> list[Any]:
        return self._run(self.client.call(member, signature, body), timeout)

    def get(self, prop: str) -> Any:
        return self._run(self.client.get(prop), 30)

    def mark(self) -> int:
        return len(self.client.signals)

    def since(self, after: int, member: str | None = None, until: int | None = None) -> list[list[Any]]:
        """Bodies of the signals (named ``member``) from position ``after`` to ``until``."""
        return [body for name, body in list(self.client.signals[after:until])
                if member is None or name == member]

    def wait(self, member: str, match: Callable[[list[Any]], bool] = lambda b: True,
             after: int = 0, timeout: float = 60) -> list[Any]:
        """The body of the first signal ``member`` at or after ``after`` that ``match``es."""
        return self.wait_index(member, match, after, timeout)[1]

    def wait_index(self, member: str, match: Callable[[list[Any]], bool] = lambda b: True,
                   after: int = 0, timeout: float = 60) -> tuple[int, list[Any]]:
        """Like :meth:`wait`, also giving the signal's position in the log."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            signals = list(self.client.signals)
            for i in range(seen, len(signals)):
                name, body = signals[i]
                if name == member and match(body):
                    return i, body
            seen = len(signals)
            if time.monotonic() > deadline:
                same = [b for n, b in signals[after:] if n == member]
                last = [(n, b) for n, b in signals[after:]][-8:]
                raise AssertionError(f"no matching {member} signal within {timeout:.0f} s; "
                                     f"{member} signals seen: {same}; last signals: {last}")
            time.sleep(0.01)

    def wait_state(self, state: str, after: int = 0, timeout: float = 60) -> None:
        self.wait("StateChanged", lambda b: b == [state], after, timeout)

    def states(self, after: int = 0, until: int | None = None) -> list[str]:
        return [body[0] for body in self.since(after, "StateChanged", until)]

    def close(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.client.close)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


# ---------------------------------------------------------------------- audio helpers
@contextlib.contextmanager
def service_with_client(tmp: Path, home: Any, extra_args: tuple[str, ...] = ()) -> Iterator[tuple[PrivateBus, Any, BusThread]]:
    """A real `sottovoced` for ``home`` (a ServiceHome) on a fresh private bus, with a client;
    all three stopped afterwards."""
    from tests.fixtures_dbus import start_sottovoced

    bus = start_private_bus(tmp / "bus")
    service = client = None
    try:
        service = start_sottovoced(bus, home, tmp, extra_args=extra_args)
        client = BusThread(bus.address)
        yield bus, service, client
    finally:
        if client is not None:
            client.close()
        if service is not None:
            service.stop()
        bus.stop()


def envelope(audio: np.ndarray, rate: int = 16000, win_ms: float = 10.0) -> np.ndarray:
    """RMS per ``win_ms`` window."""
    n = int(rate * win_ms / 1000)
    usable = audio[: audio.size - audio.size % n]
    if not usable.size:
        return np.zeros(0)
    return np.sqrt(np.mean(np.square(usable.reshape(-1, n)), axis=1))


def sound_spans(audio: np.ndarray, rate: int = 16000, level: float = 0.005,
                gap_s: float = 0.35, win_ms: float = 10.0) -> list[tuple[float, float]]:
    """(start, end) seconds of sound, merging gaps shorter than ``gap_s``."""
    env = envelope(audio, rate, win_ms)
    loud = np.flatnonzero(env > level)
    spans: list[tuple[float, float]] = []
    step = win_ms / 1000
    for i in loud:
        t = i * step
        if spans and t - spans[-1][1] <= gap_s:
            spans[-1] = (spans[-1][0], t + step)
        else:
            spans.append((t, t + step))
    return spans


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def service_files(tmp_path_factory: pytest.TempPathFactory) -> ServiceFiles:
    """One knowledge-base copy and index for every live service of the run (indexed once)."""
    root = tmp_path_factory.mktemp("live")
    kb = root / "kb"
    shutil.copytree(ROOT / "knowledge_base", kb)
    return ServiceFiles(root, kb, root / "index")


@pytest.fixture(scope="session")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """text -> a 16 kHz WAV of it spoken by espeak-ng (made once per text).

    At 140 words a minute Whisper tiny.en hears the sample questions right whatever the frame
    alignment; at espeak's default 160 it now and then hears "flash screen" or "scary more".
    """
    folder = tmp_path_factory.mktemp("spoken")
    made: dict[str, Path] = {}

    def make(text: str) -> Path:
        if text not in made:
            made[text] = espeak_wav(text, folder / f"q{len(made)}.wav", speed=SPEAK_WPM)
        return made[text]

    return make


@pytest.fixture(scope="module")
def module_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    """A private bus for one module's service (the D-Bus tests' service owns the shared one)."""
    bus = start_private_bus(tmp_path_factory.mktemp("livebus"))
    yield bus
    bus.stop()
