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
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
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
        """``time.monotonic()`` at which each sample was (approximately) played."""
        with self._lock:
            blocks = list(self.blocks)
        out = [t - (b.size - np.arange(b.size)) / self.rate for t, b in blocks]
        return np.concatenate(out) if out else np.zeros(0)

    def between(self, start: float, end: float = float("inf")) -> np.ndarray:
        """Samples played between two ``time.monotonic()`` instants."""
        t = self.times()
        audio = self.audio[: t.size]
        return audio[(t >= start) & (t < end)]


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
        self._readers: dict[str, subprocess.Popen[bytes]] = {}
        self._modules: dict[str, int] = {}
        self._extra_modules: list[int] = []

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> None:
        args = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                "--use-pid-file=no", "--log-target=stderr",
                "-L", "module-native-protocol-unix auth-anonymous=1"]
        log = open(self.root / "pulseaudio.log", "wb")
        self._server = subprocess.Popen(args, env=self._server_env, stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while subprocess.run(["pactl", "info"], env=self.subprocess_env(), capture_output=True).returncode:
            if self._server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PulseAudio did not start; see {self.root / 'pulseaudio.log'}")
            time.sleep(0.05)
        for name in SINKS:
            self._load_sink(name)
        self.pactl("set-default-sink", self.speaker)
        self.pactl("set-default-source", f"{self.mic}.monitor")

    def close(self) -> None:
        for name in list(self._readers):
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
            raise RuntimeError(f"pactl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def names(self, kind: str) -> list[str]:
        """Current source or sink names (``kind`` is "sources" or "sinks")."""
        return [line.split("\t")[1] for line in self.pactl("list", "short", kind).splitlines()]

    def reset(self) -> None:
        """Back to the initial card: extra modules unloaded, both sinks present, defaults set."""
        for module in reversed(self._extra_modules):
            with contextlib.suppress(RuntimeError):
                self.pactl("unload-module", str(module))
        self._extra_modules.clear()
        for name in SINKS:
            if name not in self._modules:
                self.restore_device(name)
        self.pactl("set-default-sink", self.speaker)
        self.pactl("set-default-source", f"{self.mic}.monitor")

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

    def restore_device(self, name: str = "micfeed") -> None:
        """Plug a removed device back in (same name and format)."""
        self._load_sink(name)
        if name == self.mic:
            self.pactl("set-default-source", f"{self.mic}.monitor")

    # ------------------------------------------------------------ the speaker side
    @contextlib.contextmanager
    def record_speaker(self, device: str | None = None) -> Iterator[Recording]:
        """Record a source (default ``speaker.monitor``) for the duration of the block."""
        source = device or f"{self.speaker}.monitor"
        proc = subprocess.Popen(
            ["parec", "--latency-msec=10", f"--device={source}", "--raw", "--format=s16le",
             f"--rate={RATE}", "--channels=1"],
            env=self.subprocess_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        rec = Recording()
        reader = threading.Thread(target=_read_pcm, args=(proc, rec), daemon=True)
        reader.start()
        try:
            _wait_for(lambda: bool(rec.blocks), 5.0, f"parec on {source} produced nothing")
            yield rec
        finally:
            proc.terminate()
            proc.wait(5)
            reader.join(5)

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
            self.pactl("set-default-source", "ec_mic")
            self.pactl("set-default-sink", "ec_speaker")
        return EchoCancel("ec_mic", "ec_speaker", module)

    def unload_module(self, module: int) -> None:
        self.pactl("unload-module", str(module))
        if module in self._extra_modules:
            self._extra_modules.remove(module)

    # ------------------------------------------------------------ internals
    def _load_sink(self, name: str) -> None:
        self._modules[name] = int(self.pactl("load-module", "module-null-sink", SINKS[name]))
        # A low-latency reader on each monitor keeps the sink rendering in small steps: until
        # one is attached, a new null sink renders in 2 s slices and a new stream's first
        # buffer arrives ~2 s late. Wait for the reader's first bytes: then the sink is warm.
        proc = subprocess.Popen(
            ["parec", "--latency-msec=10", f"--device={name}.monitor", "--raw"],
            env=self.subprocess_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._readers[name] = proc
        warm = threading.Event()
        threading.Thread(target=_drain, args=(proc, warm), daemon=True).start()
        if not warm.wait(10):
            raise RuntimeError(f"no audio from {name}.monitor within 10 s")

    def _stop_reader(self, name: str) -> None:
        proc = self._readers.pop(name, None)
        if proc is not None:
            proc.terminate()
            proc.wait(5)

    def _loopback_input(self, module: int) -> str | None:
        for stream in json.loads(self.pactl("-f", "json", "list", "sink-inputs")):
            if str(stream.get("owner_module")) == str(module):
                return str(stream["index"])
        return None


def _read_pcm(proc: subprocess.Popen[bytes], rec: Recording) -> None:
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):    # type: ignore[attr-defined]
        if len(chunk) % 2:
            chunk += proc.stdout.read(1)
        block = np.frombuffer(chunk, dtype="<i2").astype(np.float32) / 32768.0
        with rec._lock:
            rec.blocks.append((time.monotonic(), block))


def _drain(proc: subprocess.Popen[bytes], warm: threading.Event) -> None:
    assert proc.stdout is not None
    while proc.stdout.read1(65536):    # type: ignore[attr-defined]
        warm.set()


def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def pulse_available() -> str | None:
    """Why the rig cannot run here, or None."""
    for exe in ("pulseaudio", "pactl", "paplay", "parec"):
        if shutil.which(exe) is None:
            return f"{exe} is not installed (apt: pulseaudio pulseaudio-utils)"
    return None


@pytest.fixture(scope="session")
def pulse() -> Iterator[PulseRig]:
    """The virtual sound card for the whole run; ``PULSE_SERVER`` is set in this process."""
    reason = pulse_available()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="sottovoce-pulse-") as tmp:
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


@pytest.fixture()
def pulse_clean(pulse: PulseRig) -> Iterator[PulseRig]:
    """The same card, put back to its initial state after the test (devices, modules, defaults)."""
    pulse.reset()
    yield pulse
    pulse.reset()
