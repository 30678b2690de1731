"""The always-on service over many turns: `python -m bench.soak [--turns N]` (40 turns in
`python -m bench soak`).

One real `sottovoced` on the virtual sound card and a private bus (as `bench service` runs it)
is worked the way a day of use would work it, in real time: a spoken question every turn (the
service benchmark's 12, in turn), a `Say` of a sentence of a length not said before (cut short
once synthesized: real replies come in every length, and the benchmark's questions get the
same few replies), a barge-in over a long `Say` every 5th turn, and a knowledge-base file
edited every 10th (the watcher reindexes it while the service keeps listening). After each
turn the service's resident memory, threads and open file descriptors are read from /proc.

Printed: the run in tenths (memory, threads, descriptors, voice-to-voice latency, answers),
the memory trend over the second half (the first turns fill caches and allocator pools once), and
the time from a saved file to its ``IndexUpdated`` signal. An always-on assistant should
level off: no growth per turn, no threads or descriptors left behind.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.service import INTERRUPTIONS, QUESTIONS, Measure, Results, ask_aloud, barge_in, run_live
from bench.util import cleanup_on_sigterm, espeak_wav, machine, mib, pct, proc_status, table
from tests.fixtures_pulse import PulseRig, pulse_available
from tests.fixtures_service import SPEAK_WPM, BusThread, LiveService

DEFAULT_TURNS = 40
BARGE_EVERY = 5
EDIT_EVERY = 10
INDEX_TIMEOUT = 60.0
WORDS = ("the keeper climbed two hundred and twelve steps at dusk to light the green lamp while "
         "the ferry crossed from Hallow Island and the bakery opened at a quarter to seven").split()


@dataclass
class Sample:
    turn: int
    rss_mb: float
    anon_mb: float
    threads: int
    fds: int
    v2v: float | None
    answered: bool


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    reindex_s: list[float] = field(default_factory=list)
    barge: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    start_rss_mb: float = float("nan")
    start_anon_mb: float = float("nan")


def proc_sample(pid: int) -> tuple[float, float, int, int]:
    """Resident memory and its anonymous part (MiB: not file-backed, so not model weights
    mapped from disk), threads and open file descriptors of process ``pid``."""
    status = proc_status(pid)
    return (mib(status["VmRSS"]), mib(status["RssAnon"]), int(status["Threads"]),
            len(list(Path(f"/proc/{pid}/fd").iterdir())))


def _edit_kb(bus: BusThread, kb: Path, n: int) -> float:
    """Save a changed note into the knowledge base; seconds until the service has reindexed it."""
    mark = bus.mark()
    note = kb / "soak_log.md"
    lines = note.read_text().splitlines() if note.exists() else ["# Soak log", ""]
    lines.append(f"- Entry {n}: the harbour ferry ran {n} crossings today.")
    saved = time.monotonic()
    note.write_text("\n".join(lines) + "\n")
    bus.wait("IndexUpdated", after=mark, timeout=INDEX_TIMEOUT)
    return time.monotonic() - saved


def _say_new_length(bus: BusThread, n: int) -> None:
    """Have the service synthesize one sentence of a length it has not said yet, then stop it."""
    words = 3 + (n * 7) % 41                  # 3..43 words, each length once per 41 turns
    text = " ".join((WORDS * 3)[:words]).capitalize() + "."
    mark = bus.mark()
    bus.call("Say", "s", [text])
    bus.call("Interrupt")
    bus.wait_state("listening", mark, 30)


def _turn(rig: PulseRig, bus: BusThread, service: LiveService, tmp: Path, wavs: list[Path],
          cuts: list[Path], n: int, soak: Soak, rng: np.random.Generator) -> None:
    res = Results()
    if n % EDIT_EVERY == 0:
        soak.reindex_s.append(_edit_kb(bus, tmp / "kb", n))
    if n % BARGE_EVERY == 0:
        barge_in(rig, bus, cuts[n % len(cuts)], 0.4 + 1.2 * float(rng.random()), res)
        soak.barge.extend(res.barge)
    ask_aloud(rig, bus, service, wavs[n % len(wavs)], res)
    _say_new_length(bus, n)
    rss, anon, threads, fds = proc_sample(service.proc.pid)
    soak.samples.append(Sample(n, rss, anon, threads, fds, res.v2v[0] if res.v2v else None,
                               res.answered > 0))


def _soak(turns: int, soak: Soak) -> Measure:
    def measure(rig: PulseRig, bus: BusThread, service: LiveService, tmp: Path) -> None:
        soak.start_rss_mb, soak.start_anon_mb = proc_sample(service.proc.pid)[:2]
        wavs = [espeak_wav(q, tmp / f"q{i}.wav", speed=SPEAK_WPM) for i, q in enumerate(QUESTIONS)]
        cuts = [espeak_wav(q, tmp / f"cut{i}.wav", speed=SPEAK_WPM) for i, q in enumerate(INTERRUPTIONS)]
        rng = np.random.default_rng(5)
        for n in range(1, turns + 1):
            try:
                _turn(rig, bus, service, tmp, wavs, cuts, n, soak, rng)
            except (AssertionError, TimeoutError) as exc:
                soak.notes.append(f"turn {n} failed: {str(exc).splitlines()[0][:160]}")
                if service.proc.poll() is not None:
                    soak.notes.append(f"sottovoced exited with {service.proc.returncode}")
                    return
                if rig.revive():
                    soak.notes.append(f"turn {n}: the test's PulseAudio server died and was restarted")
                bus.call("Interrupt")
            done = bool(soak.samples) and soak.samples[-1].turn == n
            print(f"  turn {n}/{turns}: {_line(soak.samples[-1]) if done else 'failed'}", flush=True)
    return measure


def _line(s: Sample) -> str:
    v2v = f"{s.v2v * 1000:.0f} ms" if s.v2v is not None else "-"
    return (f"RSS {s.rss_mb:.0f} MiB ({s.anon_mb:.0f} anonymous), {s.threads} threads, "
            f"{s.fds} fds, voice-to-voice {v2v}, {'answered' if s.answered else 'NOT answered'}")


def _per_100_turns(samples: list[Sample], key: str) -> float:
    """Least-squares slope of ``key`` against the turn number, in MiB per 100 turns (NaN for
    fewer than 10 samples): steadier than two end points when memory swings between turns."""
    if len(samples) < 10:
        return float("nan")
    turns = np.array([x.turn for x in samples], dtype=float)
    values = np.array([getattr(x, key) for x in samples], dtype=float)
    return float(np.polyfit(turns, values, 1)[0] * 100)


def report(soak: Soak, turns: int) -> str:
    """The run in tenths and its growth, as Markdown."""
    s = soak.samples
    if not s:
        return "No turn completed.\n" + "\n".join(f"- {n}" for n in soak.notes)
    tenth = max(1, turns // 10)
    rows = []
    for start in range(1, turns + 1, tenth):
        part = [x for x in s if start <= x.turn < start + tenth]
        if not part:
            continue
        v2v = [x.v2v for x in part if x.v2v is not None]
        rows.append((f"{start}-{min(start + tenth - 1, turns)}", f"{max(x.rss_mb for x in part):.0f}",
                     max(x.threads for x in part), max(x.fds for x in part),
                     f"{pct(v2v, 50) * 1000:.0f}" if v2v else "-",
                     f"{sum(x.answered for x in part)}/{len(part)}"))
    half = s[len(s) // 2:]
    growth = _per_100_turns(half, "rss_mb")
    anon_growth = _per_100_turns(half, "anon_mb")
    out = [table(("turns", "RSS max (MiB)", "threads max", "fds max", "voice-to-voice p50 (ms)",
                  "answered"), rows), ""]
    out.append(f"RSS listening before the first question {soak.start_rss_mb:.0f} MiB "
               f"({soak.start_anon_mb:.0f} anonymous), after turn {half[0].turn} "
               f"{half[0].rss_mb:.0f} MiB, at the end {s[-1].rss_mb:.0f} MiB "
               f"({s[-1].anon_mb:.0f} anonymous). " + (
                   f"Trend over the second half (least-squares slope): {growth:+.1f} MiB per 100 "
                   f"turns ({anon_growth:+.1f} anonymous). " if not math.isnan(growth) else
                   "Too few turns for a trend (20 or more give one). ") +
               f"Threads {s[0].threads} -> {s[-1].threads}, "
               f"descriptors {s[0].fds} -> {s[-1].fds}.")
    answered = sum(x.answered for x in s)
    barge = f" (speech onset -> playback silent p95 {pct(soak.barge, 95) * 1000:.0f} ms)" \
        if soak.barge else ""
    reindex = f", saved -> IndexUpdated p50 {pct(soak.reindex_s, 50):.2f} s" if soak.reindex_s else ""
    out.append(f"Answered {answered}/{turns} questions; {len(soak.barge)} barge-ins{barge}; "
               f"{len(soak.reindex_s)} knowledge-base edits{reindex}.")
    out += [f"- {n}" for n in soak.notes]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=DEFAULT_TURNS,
                        help=f"spoken questions to ask (default {DEFAULT_TURNS}; about 10 s each)")
    args = parser.parse_args(argv or [])
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    cleanup_on_sigterm()
    reason = pulse_available()
    if reason:
        print(f"(skipped: {reason})")
        return
    soak = Soak()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sottovoce-bench-soak-") as tmp:
        run_live(Path(tmp), _soak(args.turns, soak))
    minutes = (time.monotonic() - started) / 60
    print(f"\n### `sottovoced` soak: {args.turns} turns in {minutes:.1f} min, real time; {machine()}\n")
    print(report(soak, args.turns))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
