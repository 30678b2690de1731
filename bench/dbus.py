"""D-Bus control latency of the real service: start-up to READY=1, property reads, method
round trips, signal delivery and the `sottovoce status` command, on a private bus."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from bench.util import machine, no_options, pct, table

ROUNDS = 50


async def _measure(address: str) -> list[tuple[str, list[float]]]:
    from tests.dbus_client import Client

    client = await Client.connect(address)
    try:
        get_all, set_emotion, signal = [], [], []
        for i in range(ROUNDS):
            t0 = time.perf_counter()
            await client.get_all()
            get_all.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await client.call("SetEmotion", "sd", ["calm" if i % 2 else "neutral", 0.5])
            set_emotion.append(time.perf_counter() - t0)
            mark = client.mark()
            want = "paused" if i % 2 == 0 else "listening"
            t0 = time.perf_counter()
            await client.call("Pause" if want == "paused" else "Resume")
            await client.wait_signal("StateChanged", lambda a: a == [want], mark, timeout=10)
            signal.append(time.perf_counter() - t0)
        if want == "paused":
            await client.call("Resume")
        return [("GetAll (8 properties)", get_all), ("SetEmotion round trip", set_emotion),
                ("Pause/Resume -> StateChanged received", signal)]
    finally:
        client.close()


def _cli_status(env: dict[str, str]) -> list[float]:
    from tests.fixtures_dbus import SOTTOVOCE

    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([str(SOTTOVOCE), "status"], env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: Sequence[str] | None = None) -> None:
    no_options("dbus", __doc__, argv)
    from tests.fixtures_dbus import make_service_home, start_private_bus, start_sottovoced

    with tempfile.TemporaryDirectory(prefix="bench-dbus-") as tmp:
        base = Path(tmp)
        bus = start_private_bus(base / "bus")
        try:
            t0 = time.perf_counter()
            service = start_sottovoced(bus, make_service_home(base / "svc"), base)
            ready_s = time.perf_counter() - t0
            try:
                rows = asyncio.run(_measure(bus.address))
                cli = _cli_status(bus.env)
            finally:
                service.stop()
        finally:
            bus.stop()
    print(f"machine: {machine()}\n")
    body = [(name, len(v), pct(v, 50) * 1e3, pct(v, 95) * 1e3) for name, v in rows]
    body.append(("`sottovoce status` (process, 5 runs)", len(cli), pct(cli, 50) * 1e3,
                 pct(cli, 95) * 1e3))
    print(table(["what", "n", "p50 ms", "p95 ms"], body))
    print(f"\nsottovoced start to READY=1 (models loaded, index built): {ready_s:.1f} s")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
