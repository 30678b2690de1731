"""`python -m bench`: help and a clear refusal of unknown names (no benchmark runs)."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures_core import ROOT


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_help_lists_the_benchmarks() -> None:
    out = _bench("--help")
    assert out.returncode == 0 and "pipeline service soak kb" in out.stdout


def test_an_unknown_benchmark_is_refused_before_anything_runs() -> None:
    out = _bench("service", "nope")
    assert out.returncode == 2
    assert "unknown benchmark: nope" in out.stderr and "## bench" not in out.stdout


def test_each_benchmark_module_has_help_and_refuses_stray_options() -> None:
    """`python -m bench.NAME --help` (as the README names them) prints what it measures and
    runs nothing: before, bench.stages/pipeline/service/devices/dbus ignored it and ran."""
    for name in ("pipeline", "service", "stages", "devices", "dbus", "kb", "soak", "quality"):
        out = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith(f"usage: python -m bench.{name}"), (name, out.stdout)
        assert "###" not in out.stdout, name                 # no result table: nothing ran
    for name in ("pipeline", "stages"):
        out = subprocess.run([sys.executable, "-m", f"bench.{name}", "--fast"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 2 and "unrecognized arguments: --fast" in out.stderr, (name, out.stderr)
