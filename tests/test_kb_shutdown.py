"""The real service stops on SIGTERM within its promised 3 s while its knowledge base is busy
embedding a large file (a torch batch in progress cannot be interrupted: the service leaves
it behind and exits)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.fixtures_dbus import make_service_home, start_private_bus, start_sottovoced, wait_until
from tests.fixtures_kb import filler_text

LARGE = 1_500_000            # characters: over a thousand chunks, a minute or more of embedding
STOP_PROMISE_S = 3.0         # README: SIGTERM/SIGINT stop cleanly within 3 s


def test_sigterm_stops_the_service_while_a_large_file_is_embedded(tmp_path: Path) -> None:
    home = make_service_home(tmp_path)
    home.write_config("conversation:\n  history_file: ''\n")
    bus = start_private_bus(tmp_path / "bus")
    service = None
    try:
        service = start_sottovoced(bus, home, tmp_path)
        (home.kb / "big.txt").write_text(filler_text(LARGE), encoding="utf-8")
        log = service.log
        try:
            wait_until(lambda: "knowledge base: embedding big.txt" in log.read_text(errors="replace"), 60,
                       "the service to start embedding big.txt")
            announced = True
        except AssertionError:      # a service that does not say so: it is embedding by now anyway
            announced = False

        start = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        try:
            code = service.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("sottovoced still runs 30 s after SIGTERM:\n" + service.log_tail()) from None
        took = time.monotonic() - start
        assert code == 0, service.log_tail()
        assert took < STOP_PROMISE_S, (took, service.log_tail())
        assert announced, "the log never said the large file was being embedded"
        assert "clean shutdown took too long" not in log.read_text(errors="replace"), service.log_tail()
    finally:
        if service is not None:
            service.stop()
        bus.stop()
