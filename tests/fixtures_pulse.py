"""A virtual sound card: a private PulseAudio server with two null sinks.

``speaker`` is the loudspeaker (record ``speaker.monitor`` to hear what was played) and
``micfeed`` is the microphone (play a WAV into it; ``micfeed.monitor``, the default source,
is what a microphone stream reads). Both run at 16 kHz mono, in real time.

How programs reach it: ``PULSE_SERVER=unix:<runtime>/pulse/native`` is all a PulseAudio
client needs (the server allows anonymous clients on its socket, so no cookie). PortAudio
(sounddevice) goes through ALSA's ``pulse`` plugin (Debian package libasound2-plugins): its
``/etc/alsa/conf.d/99-pulse.conf`` hook routes ALSA's "default" to PulseAudio whenever a server
answers at ``PULSE_SERVER`` when ALSA first reads its configuration, and the named "pulse"
device is always defined, so no ``~/.asoundrc`` is needed. A process whose PortAudio started
before the server existed sees no devices until PortAudio is re-initialised
(:func:`daemon.audio.portaudio.reinit_if_idle` does that).

The server gets a fresh 0700 ``XDG_RUNTIME_DIR`` and a fresh ``HOME``; every process started
here is stopped by its own PID. The fixture sets ``PULSE_SERVER`` in this test process too, so
in-process sounddevice streams use the card.

PulseAudio itself has been seen to die now and then (a segfault in a null sink's thread while
streams come and go: twice in about ten full runs here). :meth:`PulseRig.reset` then starts a
new server on the same socket with fresh sinks (its log kept beside it), so does the start of
every test, and a test that failed while the server died is run once more
(:func:`sound_server_died`, used in conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

RATE = 16000
SINKS = {
    "speaker": f"sink_name=speaker rate={RATE} channels=1",
    "micfeed": f"sink_name=micfeed rate={RATE} channels=1",
}


@dataclass
class Recording:
    """What ``parec`` recorded: 16 kHz float32 mono, with the wall-clock arrival of each read."""

    rate: int = RATE
    blocks: list[tuple[float, np.ndarray]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def audio(self) -> np.ndarray:
        with self._lock:
            parts = [b for _, b in self.blocks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def times(self) -> np.ndarray:
        """``time.monotonic()`` at which each sample was played, from the sample count.

        Blocks arrive late by a varying amount (never early): the least-delayed block fixes
        the clock, and samples follow it at exactly ``rate``.
        """
        with self._lock:
            blocks = list(self.blocks)
        if not blocks:
            return np.zeros(0)
        ends = np.cumsum([b.size for _, b in blocks])
        anchor = min(t - end / self.rate for (t, _), end in zip(blocks, ends))
        return anchor + np.arange(int(ends[-1])) / self.rate

    def covers(self, until: float) -> bool:
        """True once samples played up to ``until`` (monotonic) have arrived."""
        t = self.times()
        return bool(t.size) and t[-1] >= until

    def between(self, start: float, end: float = float("inf")) -> np.ndarray:
        """Samples played between two ``time.monotonic()`` instants."""
        t = self.times()
        audio = self.audio[: t.size]
        return audio[(t >= start) & (t < end)]


class _MonitorReader:
    """One ``parec`` kept on a sink's monitor for the whole run; recordings tap into it.

    A low-latency reader keeps the null sink rendering in small steps: until one is attached,
    a new null sink renders in 2 s slices and a new stream's first buffer arrives ~2 s late.
    Starting a recorder later would also change the sink's latency under a playing stream
    and make it underrun, so recordings never start a stream of their own.
    """

    def __init__(self, source: str, env: dict[str, str]) -> None:
        self.source = source
        self.warm = threading.Event()
        self._taps: list[Recording] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["parec", "--latency-msec=10", f"--device={source}", "--raw", "--format=s16le",
             f"--rate={RATE}", "--channels=1"],
            env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._read, name=f"parec-{source}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while chunk := stdout.read1(4096):    # type: ignore[attr-defined]
            if len(chunk) % 2:
                chunk += stdout.read(1)
            now = time.monotonic()
            self.warm.set()
            with self._lock:
                taps = list(self._taps)
            if taps:
                block = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
                for rec in taps:
                    with rec._lock:
                        rec.blocks.append((now, block))

    @contextlib.contextmanager
    def tap(self) -> Iterator[Recording]:
        rec = Recording()
        with self._lock:
            self._taps.append(rec)
        try:
            _wait_for(lambda: bool(rec.blocks), 5.0, f"no audio from {self.source}")
            yield rec
            # A loaded machine delivers late: wait until the recording reaches "now".
            end = time.monotonic() - 0.05
            with contextlib.suppress(TimeoutError):
                _wait_for(lambda: rec.covers(end), 5.0, "")
        finally:
            with self._lock:
                self._taps.remove(rec)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._thread.join(5)


@dataclass(frozen=True)
class EchoCancel:
    """A loaded ``module-echo-cancel``: record ``source``, play into ``sink``."""

    source: str
    sink: str
    module: int


class PulseRig:
    """The private server and helpers; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime_dir = root / "runtime"
        self.home = root / "home"
        self.runtime_dir.mkdir(mode=0o700)
        self.home.mkdir()
        self.server = f"unix:{self.runtime_dir}/pulse/native"
        self.env = {"PULSE_SERVER": self.server}
        self.speaker, self.mic = "speaker", "micfeed"
        self._server_env = {**os.environ, "HOME": str(self.home),
                            "XDG_RUNTIME_DIR": str(self.runtime_dir), **self.env}
        self._server: subprocess.Popen[bytes] | None = None
        self._readers: dict[str, _MonitorReader] = {}
        self._keepers: dict[str, subprocess.Popen[bytes]] = {}
        self._modules: dict[str, int] = {}
        self._extra_modules: list[int] = []
        self.restarts = 0
        _RIGS.append(self)

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> None:
        """Start the server and the two sinks (call from the main thread: the server is
        tied to the thread that starts it and stops when that thread's process dies)."""
        args = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                "--use-pid-file=no", "--log-target=stderr",
                "-L", "module-native-protocol-unix auth-anonymous=1"]
        log = open(self.root / "pulseaudio.log", "wb")
        self._server = subprocess.Popen(args, env=self._server_env, stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + timeout
        while subprocess.run(["pactl", "info"], env=self.subprocess_env(), capture_output=True).returncode:
            if self._server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PulseAudio did not start; see {self.root / 'pulseaudio.log'}")
            time.sleep(0.05)
        for name in SINKS:
            self._load_sink(name)
        self.set_defaults(self.speaker, f"{self.mic}.monitor")

    def set_defaults(self, sink: str, source: str) -> None:
        """Make ``sink``/``source`` the defaults (the rig's own readers stay where they are)."""
        self.pactl("set-default-sink", sink)
        self.pactl("set-default-source", source)
        self._place_readers()

    @property
    def alive(self) -> bool:
        """The server was started and is still running."""
        return self._server is not None and self._server.poll() is None

    def revive(self) -> bool:
        """If the server died, start a new one on the same socket with fresh sinks (the old
        log is kept as ``pulseaudio-died-N.log``). True if it had to."""
        if self._server is None or self.alive:
            return False
        self.restarts += 1
        _DEATHS["all"] += 1
        kept = self.root / f"pulseaudio-died-{self.restarts}.log"
        (self.root / "pulseaudio.log").replace(kept)
        tail = kept.read_text(errors="replace").splitlines()[-5:]
        print(f"\nPulseAudio test server died (exit code {self._server.returncode}); starting a "
              f"new one. The end of its log ({kept}):", *tail, sep="\n  ", file=sys.stderr)
        for name in set(self._readers) | set(self._keepers):
            self._stop_reader(name)
        self._modules.clear()
        self._extra_modules.clear()
        self.start()
        return True

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            _RIGS.remove(self)
        for name in set(self._readers) | set(self._keepers):
            self._stop_reader(name)
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()
            try:
                self._server.wait(5)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()

    def subprocess_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) plus what reaches the card."""
        return {**(os.environ if base is None else base), **self.env}

    def pactl(self, *args: str) -> str:
        out = subprocess.run(["pactl", *args], env=self.subprocess_env(), capture_output=True,
                             text=True, timeout=10)
        if out.returncode:
            why = out.stderr.strip()
            if self._server is not None and not self.alive:
                why += f" (the PulseAudio test server died, exit code {self._server.returncode})"
            raise RuntimeError(f"pactl {' '.join(args)} failed: {why}")
        return out.stdout.strip()

    def names(self, kind: str) -> list[str]:
        """Current source or sink names (``kind`` is "sources" or "sinks")."""
        return [line.split("\t")[1] for line in self.pactl("list", "short", kind).splitlines()]

    def reset(self, fresh: bool = False) -> None:
        """Back to the initial card: extra modules unloaded, both sinks present, defaults set.

        ``fresh`` also replaces both sinks with new ones. A module that wrapped them (the
        WebRTC echo canceller) leaves them changed after it is unloaded: sound played into
        ``micfeed`` afterwards loses its first few hundred milliseconds at the monitor.
        A server that died is started afresh first.
        """
        self.revive()
        for module in reversed(self._extra_modules):
            with contextlib.suppress(RuntimeError):
                self.pactl("unload-module", str(module))
        self._extra_modules.clear()
        for name in SINKS:
            if fresh and name in self._modules:
                self.remove_device(name)
            if name not in self._modules:
                self.restore_device(name)
        self.set_defaults(self.speaker, f"{self.mic}.monitor")

    # ------------------------------------------------------------ the microphone side
    def play_into_mic(self, wav: str | os.PathLike[str], wait: bool = True,
                      device: str | None = None) -> subprocess.Popen[bytes]:
        """``paplay`` the file into the microphone in real time; by default wait for the end."""
        proc = subprocess.Popen(["paplay", f"--device={device or self.mic}", str(wav)],
                                env=self.subprocess_env(), stdin=subprocess.DEVNULL)
        if wait:
            if proc.wait(120):
                raise RuntimeError(f"paplay {wav} failed with exit code {proc.returncode}")
        return proc

    def remove_device(self, name: str = "micfeed") -> None:
        """Make a device vanish as if unplugged: unload its null sink (and its monitor)."""
        module = self._modules.pop(name)
        self._stop_reader(name)
        self.pactl("unload-module", str(module))
        self._place_readers()

    def restore_device(self, name: str = "micfeed") -> None:
        """Plug a removed device back in (same name and format)."""
        self._load_sink(name)
        self.set_defaults(self.speaker, f"{self.mic}.monitor")

    # ------------------------------------------------------------ the speaker side
    @contextlib.contextmanager
    def record_speaker(self, device: str | None = None) -> Iterator[Recording]:
        """Record what the loudspeaker plays (or ``device``, a source) during the block.

        ``speaker.monitor`` and ``micfeed.monitor`` are read by the rig's resident readers
        (no new stream); any other source gets its own ``parec`` for the block.
        """
        source = device or f"{self.speaker}.monitor"
        sink = source.removesuffix(".monitor")
        if source.endswith(".monitor") and sink in self._readers:
            with self._readers[sink].tap() as rec:
                yield rec
            return
        reader = _MonitorReader(source, self.subprocess_env())
        try:
            with reader.tap() as rec:
                yield rec
        finally:
            reader.stop()

    # ------------------------------------------------------------ echo
    def add_echo_loopback(self, volume: float = 0.5, latency_msec: int = 30) -> int:
        """Leak the speaker into the microphone (speaker.monitor -> micfeed) at ``volume``."""
        module = int(self.pactl(
            "load-module", "module-loopback", f"source={self.speaker}.monitor", f"sink={self.mic}",
            f"latency_msec={latency_msec}", "source_dont_move=true", "sink_dont_move=true"))
        self._extra_modules.append(module)
        _wait_for(lambda: self._loopback_input(module) is not None, 5.0, "loopback did not start")
        self.pactl("set-sink-input-volume", self._loopback_input(module) or "", f"{volume:.3f}")
        return module

    def load_echo_cancel(self, set_default: bool = False) -> EchoCancel:
        """``module-echo-cancel`` (WebRTC) over micfeed.monitor and speaker.

        Returns the new source (``ec_mic``) and sink (``ec_speaker``); with ``set_default``
        they become the defaults, so "default" devices go through the canceller.
        """
        module = int(self.pactl(
            "load-module", "module-echo-cancel", "aec_method=webrtc",
            f"source_master={self.mic}.monitor", f"sink_master={self.speaker}",
            "source_name=ec_mic", "sink_name=ec_speaker"))
        self._extra_modules.append(module)
        if set_default:
            self.set_defaults("ec_speaker", "ec_mic")
        return EchoCancel("ec_mic", "ec_speaker", module)

    def unload_module(self, module: int) -> None:
        self.pactl("unload-module", str(module))
        if module in self._extra_modules:
            self._extra_modules.remove(module)

    # ------------------------------------------------------------ internals
    def _load_sink(self, name: str) -> None:
        self._modules[name] = int(self.pactl("load-module", "module-null-sink", SINKS[name]))
        reader = _MonitorReader(f"{name}.monitor", self.subprocess_env())
        self._readers[name] = reader
        if not reader.warm.wait(10):        # then the sink renders in small steps
            raise RuntimeError(f"no audio from {name}.monitor within 10 s")
        # A sink with no input renders in 2 s slices: the first stream played into it then
        # gets no callbacks for up to 2 s and races to refill afterwards. A low-latency
        # stream of silence playing all the time keeps the sink in small steps.
        self._keepers[name] = subprocess.Popen(
            ["pacat", "--playback", "--latency-msec=10", f"--device={name}", "--raw",
             "--format=s16le", f"--rate={RATE}", "--channels=1", "/dev/zero"],
            env=self.subprocess_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def _place_readers(self) -> None:
        """Put readers (and keepers) that PulseAudio moved back on their own devices.

        Without module-stream-restore, a stream that merely asked for a device follows the
        default source when that changes if it sat on the old default. A stream moved by
        ``pactl move-source-output`` stays put from then on.
        """
        sources = {str(s["index"]): s["name"]
                   for s in json.loads(self.pactl("-f", "json", "list", "sources"))}
        by_pid = {str(r.proc.pid): r for r in self._readers.values()}
        for stream in json.loads(self.pactl("-f", "json", "list", "source-outputs")):
            reader = by_pid.get(stream.get("properties", {}).get("application.process.id", ""))
            if reader is not None and sources.get(str(stream["source"])) != reader.source:
                self.pactl("move-source-output", str(stream["index"]), reader.source)
        sinks = {str(s["index"]): s["name"] for s in json.loads(self.pactl("-f", "json", "list", "sinks"))}
        keepers = {str(p.pid): name for name, p in self._keepers.items()}
        for stream in json.loads(self.pactl("-f", "json", "list", "sink-inputs")):
            name = keepers.get(stream.get("properties", {}).get("application.process.id", ""))
            if name is not None and sinks.get(str(stream["sink"])) != name:
                self.pactl("move-sink-input", str(stream["index"]), name)

    def _stop_reader(self, name: str) -> None:
        reader = self._readers.pop(name, None)
        if reader is not None:
            reader.stop()
        keeper = self._keepers.pop(name, None)
        if keeper is not None:
            keeper.terminate()
            keeper.wait(5)

    def _loopback_input(self, module: int) -> str | None:
        for stream in json.loads(self.pactl("-f", "json", "list", "sink-inputs")):
            if str(stream.get("owner_module")) == str(module):
                return str(stream["index"])
        return None


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, even from SIGKILL.

    Without it a killed test run leaves its sound server behind. (The readers and
    ``pactl`` clients exit by themselves once the server is gone.)
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


# Every rig started in this process (the session's card, a benchmark's), newest last, and
# how many servers died: in all, and by the start of the current test.
_RIGS: list[PulseRig] = []
_DEATHS = {"all": 0, "at_test_start": 0}


def note_test_start() -> None:
    """Called as each test starts (conftest.py): a dead server is started afresh (a live
    service reconnects to it by itself), and the count is noted for :func:`sound_server_died`."""
    for rig in list(_RIGS):
        rig.revive()
    _DEATHS["at_test_start"] = _DEATHS["all"]


def sound_server_died(error: BaseException | None = None) -> bool:
    """Asked once a test failed: did a sound server die since it started (dead now, or
    already started afresh by a fixture's reset)?"""
    dead_now = any(rig._server is not None and not rig.alive for rig in _RIGS)
    return dead_now or _DEATHS["all"] > _DEATHS["at_test_start"]


def pulse_available() -> str | None:
    """Why the rig cannot run here, or None."""
    for exe in ("pulseaudio", "pactl", "paplay", "parec"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt: pulseaudio pulseaudio-utils)"
    return None


@contextlib.contextmanager
def running_rig(prefix: str = "sottovoce-pulse-") -> Iterator[PulseRig]:
    """A started rig in a fresh folder, with ``PULSE_SERVER`` set in this process meanwhile."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        rig = PulseRig(Path(tmp))
        saved = os.environ.get("PULSE_SERVER")
        try:
            rig.start()
            os.environ["PULSE_SERVER"] = rig.server
            yield rig
        finally:
            rig.close()
            if saved is None:
                os.environ.pop("PULSE_SERVER", None)
            else:
                os.environ["PULSE_SERVER"] = saved


@pytest.fixture(scope="session")
def pulse() -> Iterator[PulseRig]:
    """The virtual sound card for the whole run; ``PULSE_SERVER`` is set in this process."""
    reason = pulse_available()
    if reason:
        pytest.skip(reason)
    with running_rig() as rig:
        yield rig


@pytest.fixture()
def pulse_clean(pulse: PulseRig) -> Iterator[PulseRig]:
    """The same card, put back to its initial state after the test (devices, modules, defaults)."""
    pulse.reset()
    yield pulse
    pulse.reset()
