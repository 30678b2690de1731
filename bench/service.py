"""The always-on service on the virtual sound card, in real time: `python -m bench service`.

A real `sottovoced` runs on a private PulseAudio server (tests/fixtures_pulse.py) and a private
D-Bus bus. Measured from the recorded signals (``micfeed.monitor`` is what the service's
microphone hears, ``speaker.monitor`` what it played; both stamped by the same recorder):

- voice-to-voice: last speech sample into the microphone -> first reply sample out of the
  speaker, over spoken questions about the sample knowledge base;
- barge-in: onset of the user's speech over a reply -> the speaker falling silent;
- CPU (share of one core) and RSS of the service while it listens to 60 s of silence.

``SOTTOVOCE_BENCH_CONFIG`` may hold extra YAML for the service's config (A/B runs).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.util import espeak_wav, machine, mib, no_options, pct, proc_status, table
from tests.fixtures_dbus import start_private_bus
from tests.fixtures_pulse import PulseRig, Recording, pulse_available
from tests.fixtures_service import (
    FIRST_LIT_Q, FLASH_Q, SPEAK_WPM, TALL_Q, BusThread, LiveService, ServiceFiles,
    start_live_service,
)

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    FLASH_Q, FIRST_LIT_Q, TALL_Q,
    "How far can the Skerrimore light be seen?",
    "What is the foghorn at Skerrimore called?",
    "How many steps does Skerrimore lighthouse have?",
    "Who was the last keeper of Skerrimore lighthouse?",
    "On which island does Skerrimore Lighthouse stand?",
    "What colour does the Skerrimore light flash?",
    "When do tours of Skerrimore lighthouse run?",
    "How long is the warranty on the Zephyr kettle?",
    "Who is the head baker at Quillfeather Bakery?",
]
BARGE_TRIALS = 10
INTERRUPTIONS = ["Wait, how tall is it?", "Sorry, when was it first lit?", "Hold on, stop."]
SAY_TEXT = ("Skerrimore Lighthouse stands on the north tip of Hallow Island. It was designed by "
            "the engineer Morag Tullach and first lit in eighteen seventy three. The tower is "
            "thirty eight metres tall and has two hundred and twelve steps.")
IDLE_S = 60.0
LEVEL = 0.01                 # |sample| above this counts as sound on the card
TURN_TIMEOUT = 90.0


@dataclass
class Results:
    v2v: list[float] = field(default_factory=list)
    barge: list[float] = field(default_factory=list)
    answered: int = 0
    timings: dict[str, list[float]] = field(default_factory=dict)
    cpu: float = float("nan")
    rss_mb: float = float("nan")
    notes: list[str] = field(default_factory=list)


def _first(rec: Recording, start: float, end: float = float("inf")) -> float | None:
    """Time of the first loud sample recorded in [start, end)."""
    t = rec.times()
    a = rec.audio[: t.size]
    hit = np.flatnonzero((np.abs(a) > LEVEL) & (t >= start) & (t < end))
    return float(t[hit[0]]) if hit.size else None


def _last(rec: Recording, start: float, end: float) -> float | None:
    t = rec.times()
    a = rec.audio[: t.size]
    hit = np.flatnonzero((np.abs(a) > LEVEL) & (t >= start) & (t < end))
    return float(t[hit[-1]]) if hit.size else None


def _silence_after(rec: Recording, start: float, gap_s: float = 0.3) -> float | None:
    """The end of the first sound run after ``start`` that is followed by ``gap_s`` of silence."""
    t = rec.times()
    a = rec.audio[: t.size]
    loud = t[(np.abs(a) > LEVEL) & (t >= start)]
    if not loud.size:
        return None
    gaps = np.flatnonzero(np.diff(loud) > gap_s)
    return float(loud[gaps[0]] if gaps.size else loud[-1])


_CLAUSE = re.compile(r"first clause ([\d.]+) s after the LLM started, its audio ([\d.]+) s later")


def _timings(service: LiveService, mark: int, out: dict[str, list[float]]) -> None:
    """The service's own per-turn timings, from its log."""
    for line in service.text(mark).splitlines():
        if "timings:" in line:
            for part in line.split("timings:", 1)[1].split(","):
                key, value = part.split()
                out.setdefault(key, []).append(float(value))
        elif found := _CLAUSE.search(line):
            out.setdefault("llm_first_clause_s", []).append(float(found.group(1)))
            out.setdefault("tts_first_chunk_s", []).append(float(found.group(2)))


def ask_aloud(rig: PulseRig, bus: BusThread, service: LiveService, wav: Path, res: Results) -> None:
    mark, log = bus.mark(), service.mark()
    with rig.record_speaker() as spk, rig.record_speaker(f"{rig.mic}.monitor") as mic:
        start = time.monotonic()
        rig.play_into_mic(wav)
        bus.wait_state("listening", bus.wait_index("Transcript", after=mark, timeout=TURN_TIMEOUT)[0],
                       TURN_TIMEOUT)
    spoke_until = _last(mic, start, float("inf"))
    heard = _first(spk, spoke_until or start)
    if spoke_until is not None and heard is not None:
        res.v2v.append(heard - spoke_until)
    if bus.since(mark, "Reply"):
        res.answered += 1
    _timings(service, log, res.timings)


def barge_in(rig: PulseRig, bus: BusThread, wav: Path, delay: float, res: Results) -> None:
    mark = bus.mark()
    with rig.record_speaker() as spk, rig.record_speaker(f"{rig.mic}.monitor") as mic:
        bus.call("Say", "s", [SAY_TEXT])
        begun = _wait_sound(spk, time.monotonic() - 1.0, 20.0)
        time.sleep(max(0.0, begun + delay - time.monotonic()))
        talk = time.monotonic()
        rig.play_into_mic(wav)
        bus.wait("Interrupted", after=mark, timeout=10)
        bus.wait_state("listening", mark, TURN_TIMEOUT)
    onset = _first(mic, talk)
    silent = _silence_after(spk, talk - 0.05)
    if onset is not None and silent is not None:
        res.barge.append(silent - onset)


def _wait_sound(rec: Recording, start: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = _first(rec, start)
        if hit is not None:
            return hit
        time.sleep(0.01)
    raise TimeoutError("the service did not start speaking")


def _idle(service: LiveService, seconds: float) -> tuple[float, float]:
    """CPU share of one core and RSS (MiB) of the service while it listens to silence."""
    pid = service.proc.pid
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu(), time.monotonic()
    return (c1 - c0) / (t1 - t0), mib(proc_status(pid)["VmRSS"])


Measure = Callable[[PulseRig, BusThread, LiveService, Path], None]


def run_live(tmp: Path, measure: Measure) -> None:
    """Start PulseAudio, a private bus and `sottovoced` on a copy of the sample knowledge base
    (all under ``tmp``), call ``measure(rig, bus, service, tmp)``, then stop them by PID."""
    (tmp / "pulse").mkdir()
    rig = PulseRig(tmp / "pulse")
    bus_proc = None
    service: LiveService | None = None
    try:
        rig.start()
        bus_proc = start_private_bus(tmp / "bus")
        kb = tmp / "kb"
        shutil.copytree(ROOT / "knowledge_base", kb)
        files = ServiceFiles(tmp, kb, tmp / "index")
        extra = os.environ.get("SOTTOVOCE_BENCH_CONFIG", "")
        service = start_live_service(rig, bus_proc, files, tmp / "svc",
                                     ("--input", f"{rig.mic}.monitor", "--output", rig.speaker),
                                     extra)
        bus = BusThread(bus_proc.address)
        try:
            measure(rig, bus, service, tmp)
        finally:
            bus.close()
    finally:
        if service is not None:
            service.kill()
        if bus_proc is not None:
            bus_proc.stop()
        rig.close()


def _measure(rig: PulseRig, bus: BusThread, service: LiveService, tmp: Path, res: Results) -> None:
    res.cpu, res.rss_mb = _idle(service, IDLE_S)
    wavs = [espeak_wav(q, tmp / f"q{i}.wav", speed=SPEAK_WPM) for i, q in enumerate(QUESTIONS)]
    for wav in wavs:
        ask_aloud(rig, bus, service, wav, res)
    cuts = [espeak_wav(q, tmp / f"cut{i}.wav", speed=SPEAK_WPM) for i, q in enumerate(INTERRUPTIONS)]
    rng = np.random.default_rng(3)
    for i in range(BARGE_TRIALS):
        try:
            barge_in(rig, bus, cuts[i % len(cuts)], 0.4 + 1.2 * float(rng.random()), res)
        except (AssertionError, TimeoutError) as exc:
            res.notes.append(f"barge-in trial {i} failed: {str(exc).splitlines()[0][:120]}")
            bus.call("Interrupt")


def _row(name: str, values: list[float], target: str) -> tuple[Any, ...]:
    if not values:
        return (name, "-", "-", target, 0)
    return (name, pct(values, 50) * 1000, pct(values, 95) * 1000, target, len(values))


def main(argv: Sequence[str] | None = None) -> None:
    no_options("service", __doc__, argv)
    reason = pulse_available()
    if reason:
        print(f"(skipped: {reason})")
        return
    res = Results()
    with tempfile.TemporaryDirectory(prefix="sottovoce-bench-service-") as tmp:
        run_live(Path(tmp), lambda rig, bus, service, path: _measure(rig, bus, service, path, res))
    rows = [
        _row("voice-to-voice: last speech sample in -> first reply sample out (ms)", res.v2v,
             "p50 <= 1000"),
        _row("barge-in: user speech onset -> playback silent (ms)", res.barge, "p95 <= 250"),
    ]
    for key in ("stt_s", "retrieve_s", "llm_first_token_s", "llm_first_clause_s",
                "tts_first_chunk_s", "first_audio_s"):
        rows.append(_row(f"  inside the service: {key[:-2]} (ms)", res.timings.get(key, []), ""))
    print(f"`sottovoced` on the virtual sound card, real time; {machine()}\n")
    print(table(("measure", "p50", "p95", "target", "n"), rows))
    print(f"\nListening to {IDLE_S:.0f} s of silence: CPU {res.cpu * 100:.2f}% of one core "
          f"(target <= 3%), RSS {res.rss_mb:.0f} MiB. Questions answered: "
          f"{res.answered}/{len(QUESTIONS)}.")
    extra = os.environ.get("SOTTOVOCE_BENCH_CONFIG", "")
    if extra:
        print(f"Extra config: `{' '.join(extra.split())}`")
    for note in res.notes:
        print(f"- {note}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
