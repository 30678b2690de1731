"""Audio devices on the virtual sound card: start, stop and capture latencies, idle CPU.

Runs a private PulseAudio server (tests/fixtures_pulse.py) and measures, in real time:
- play() -> first sample heard on speaker.monitor (at latency "low", the default, and 0.05 s);
- stop_now() -> last loud sample heard on speaker.monitor (barge-in's share from the devices);
- a microphone frame's capture time -> its on_frame() call on the event loop;
- CPU of the process while a microphone and a speaker stream idle.
Times heard on speaker.monitor are stamped when ``parec`` hands them over (~10 ms late),
so the first two are slight over-estimates.
"""

from __future__ import annotations

import asyncio
import time
from typing import Sequence

import numpy as np

from bench.util import machine, no_options, pct, table
from daemon.audio.devices import Microphone, Speaker
from daemon.config import AudioConfig
from tests.fixtures_pulse import PulseRig, pulse_available, running_rig

TRIALS = 15
IDLE_S = 10.0


async def _speaker_trials(rig: PulseRig, latency: float | str) -> tuple[list[float], list[float]]:
    first: list[float] = []
    spk = Speaker(AudioConfig(output="speaker"), first.append, latency=latency)
    await spk.start()
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)).astype(np.float32)
    starts: list[float] = []
    stops: list[float] = []
    rng = np.random.default_rng(0)
    try:
        for _ in range(TRIALS):
            with rig.record_speaker() as rec:
                first.clear()
                played = time.monotonic()
                spk.play(tone, 22050, "tone")
                while not first:
                    await asyncio.sleep(0.002)
                await asyncio.sleep(0.3 + 0.4 * float(rng.random()))
                stopped = time.monotonic()
                spk.stop_now()
                await asyncio.sleep(0.3)
            loud = np.nonzero(np.abs(rec.audio) > 0.05)[0]
            times = rec.times()
            starts.append(times[loud[0]] - played)
            stops.append(times[loud[-1]] - stopped)
    finally:
        await spk.stop()
    return starts, stops


async def _cpu(seconds: float) -> float:
    """This process's CPU use (share of one core) over ``seconds`` of sleeping on the loop."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu0) / (time.monotonic() - wall0)


async def _mic_and_idle() -> tuple[list[float], float, float]:
    delays: list[float] = []

    def on_frame(_frame: np.ndarray, t: float) -> None:
        delays.append(time.monotonic() - t)

    baseline = await _cpu(IDLE_S / 2)       # the rig's own reader threads live here too
    mic = Microphone(AudioConfig(input="micfeed"), on_frame)
    spk = Speaker(AudioConfig(output="speaker"))
    await mic.start()
    await spk.start()
    try:
        await asyncio.sleep(1.0)
        busy = await _cpu(IDLE_S)
    finally:
        await mic.stop()
        await spk.stop()
    return delays[10:], busy, baseline


def _p(values: list[float]) -> tuple[float, float, int]:
    return pct(values, 50) * 1000.0, pct(values, 95) * 1000.0, len(values)


def main(argv: Sequence[str] | None = None) -> None:
    no_options("devices", __doc__, argv)
    reason = pulse_available()
    if reason:
        print(f"(skipped: {reason})")
        return
    with running_rig("sottovoce-bench-pulse-") as rig:
        starts, stops = asyncio.run(_speaker_trials(rig, "low"))
        starts_50, stops_50 = asyncio.run(_speaker_trials(rig, 0.05))
        delays, cpu, baseline = asyncio.run(_mic_and_idle())
    rows = [
        ("play() -> first sample heard (ms)", *_p(starts)),
        ("stop_now() -> last sample heard (ms)", *_p(stops)),
        ("same two, Speaker(latency=0.05): play() (ms)", *_p(starts_50)),
        ("same two, Speaker(latency=0.05): stop_now() (ms)", *_p(stops_50)),
        ("mic capture -> on_frame on the loop (ms)", *_p(delays)),
    ]
    print(f"Virtual sound card (PulseAudio null sinks), {machine()}\n")
    print(table(("measure", "p50", "p95", "n"), rows))
    print(f"\nCPU of an idle microphone + speaker stream over {IDLE_S:.0f} s: "
          f"{(cpu - baseline) * 100:.2f}% of one core ({cpu * 100:.2f}% minus the rig's "
          f"{baseline * 100:.2f}%; PulseAudio itself not counted)")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
