"""Small shared helpers for the benchmarks: spoken questions, percentiles, tables."""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


def espeak_wav(text: str, out: Path, voice: str = "en-us", speed: int = 160, rate: int = 16000,
               pad_s: float = 0.0) -> Path:
    """Speak ``text`` with espeak-ng into a mono 16-bit WAV at ``rate``, with ``pad_s`` seconds
    of silence before and after (the benchmarks' and the tests' one way to make speech).

    sox runs with ``-R``: without it the 16-bit conversion dithers afresh every time, and
    Whisper tiny.en hears borderline speech differently from run to run."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pad = ["pad", f"{pad_s:g}", f"{pad_s:g}"] if pad_s else []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-R", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out), *pad],
                       check=True, capture_output=True)
    return out


def proc_status(pid: int | str = "self") -> dict[str, str]:
    """``/proc/PID/status`` as field -> value ("VmRSS" -> "1052604 kB", "Threads" -> "28")."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict((name, value.strip()) for name, value in (line.split(":", 1) for line in lines if ":" in line))


def mib(value: str) -> float:
    """A ``/proc`` size such as "1052604 kB" in MiB."""
    return int(value.split()[0]) / 1024


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def no_options(name: str, doc: str | None, argv: Sequence[str] | None) -> None:
    """``python -m bench.NAME [-h]`` for a benchmark without options: ``--help`` prints what
    it measures and exits instead of running it; anything else is a usage error (exit 2)."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=(doc or "").split("\n\n")[0],
                                     epilog="Needs a quiet machine: anything else on the CPU skews the figures.")
    parser.parse_args([] if argv is None else list(argv))      # python -m bench: no options
    cleanup_on_sigterm()


def cleanup_on_sigterm() -> None:
    """SIGTERM (``timeout``, a closed terminal) ends the run through its ``finally`` blocks,
    so the private bus and sound server it started and its temporary folders go with it."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
