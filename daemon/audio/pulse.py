"""PulseAudio (and PipeWire's pulse server) through ``pactl``: device names and removal events.

PortAudio on Debian 12 (19.6) reaches PulseAudio only through ALSA's ``pulse`` plugin, so
PortAudio's device list shows "pulse" and "default", never the sound server's own sources and
sinks. These helpers let ``audio.input``/``audio.output`` name a PulseAudio device (e.g.
``micfeed`` or ``echo-cancel``), and notice when that device is unloaded or unplugged:
PulseAudio then moves the stream to another device silently, which PortAudio cannot see.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from typing import Callable, Literal

_LOGGER = logging.getLogger(__name__)

Kind = Literal["source", "sink"]


def pactl_path() -> str | None:
    """The ``pactl`` program, or None when it is not installed."""
    return shutil.which("pactl")


def list_devices(kind: Kind, timeout: float = 3.0) -> list[str]:
    """Names of the server's sources or sinks; empty when there is no server or no pactl."""
    exe = pactl_path()
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "list", "short", f"{kind}s"], capture_output=True, text=True,
            timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _LOGGER.debug("pactl list %ss failed: %s", kind, exc)
        return []
    if out.returncode != 0:
        return []
    names = []
    for line in out.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) >= 2 and cols[1]:
            names.append(cols[1])
    return names


def match_device(names: list[str], query: str, kind: Kind) -> str | None:
    """The device ``query`` means: an exact name, else a case-insensitive substring.

    Among several substring matches, a source that is not a ``.monitor`` (a real microphone
    rather than the echo of a sink) wins unless the query itself mentions "monitor".
    """
    if query in names:
        return query
    q = query.lower()
    hits = [n for n in names if q in n.lower()]
    if kind == "source" and "monitor" not in q:
        hits.sort(key=lambda n: n.endswith(".monitor"))
    return hits[0] if hits else None


class PulseWatch:
    """Calls ``on_gone(reason)`` once when a named source/sink disappears.

    Runs one ``pactl subscribe`` child (idle until the server reports a change); on every
    ``remove`` event for the device kind it re-lists the devices. The child ending (the
    server went away) counts as the device being gone too.
    """

    def __init__(self, kind: Kind, name: str, on_gone: Callable[[str], None]) -> None:
        self.kind = kind
        self.name = name
        self._on_gone = on_gone
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        exe = pactl_path()
        if exe is None:
            return
        self._proc = await asyncio.create_subprocess_exec(
            exe, "subscribe", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
        )
        self._task = asyncio.create_task(self._read(), name=f"pulse-watch-{self.kind}-{self.name}")
        # A removal between our open and the subscription would go unnoticed: check once.
        if self.name not in await asyncio.to_thread(list_devices, self.kind):
            self._gone(f"PulseAudio {self.kind} {self.name} disappeared")

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        marker = f"'remove' on {self.kind} #"
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                self._gone("lost the connection to the sound server")
                return
            if marker in line.decode(errors="replace"):
                names = await asyncio.to_thread(list_devices, self.kind)
                if self.name not in names:
                    self._gone(f"PulseAudio {self.kind} {self.name} disappeared")
                    return

    def _gone(self, reason: str) -> None:
        callback, self._on_gone = self._on_gone, _ignore
        callback(reason)

    async def stop(self) -> None:
        """Stop the ``pactl subscribe`` child (the one this object started)."""
        self._on_gone = _ignore
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


def _ignore(_reason: str) -> None:
    return None
