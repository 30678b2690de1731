"""Foundation benchmark: `sottovoce ask --wav --local --json`, streaming vs --no-streaming.

Each question runs in its own process (as a user would run it); peak RSS is that
process's maximum resident set size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from bench.questions import LONG_REPLIES, QUESTIONS
from bench.util import espeak_wav, machine, no_options, pct, table

STAGES = ("stt_s", "retrieve_s", "llm_first_token_s", "first_audio_s", "total_s")


def _run(base: list[str], wav: Path, out: Path, streaming: bool, env: dict[str, str]) -> tuple[dict, float]:
    """One `ask` process; returns its JSON and its own peak RSS in MiB (from wait4)."""
    cmd = base + ["ask", "--local", "--json", "--wav", str(wav), "--out", str(out)]
    if not streaming:
        cmd.append("--no-streaming")
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"ask failed ({proc.returncode}): {se.read().strip()[-400:]}")
        return json.loads(so.read()), usage.ru_maxrss / 1024.0


def main(argv: Sequence[str] | None = None) -> None:
    no_options("pipeline", __doc__, argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        cfg = tmpdir / "bench.yaml"
        cfg.write_text(f"conversation:\n  history_file: ''\nrag:\n  index_dir: {tmpdir / 'index'}\n")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "SOTTOVOCE_BENCH": "1"}
        base = [sys.executable, "-m", "daemon.cli.main", "--config", str(cfg)]
        # warm the index once so both modes see the same state
        subprocess.run(base + ["kb", "status"], env=env, capture_output=True)
        results: dict[bool, list[dict]] = {True: [], False: []}
        rss: list[float] = []
        for i, (question, _) in enumerate(QUESTIONS):
            wav = espeak_wav(question, tmpdir / f"q{i}.wav")
            for streaming in (True, False):
                data, peak = _run(base, wav, tmpdir / f"a{i}{int(streaming)}.wav", streaming, env)
                results[streaming].append(data["timings"])
                rss.append(peak)
                print(f"  q{i:02d} {'stream' if streaming else 'seq   '} first_audio "
                      f"{data['timings']['first_audio_s']:.3f}s  {question}", file=sys.stderr)
        long_runs: dict[bool, list[dict]] = {True: [], False: []}
        for i, question in enumerate(LONG_REPLIES):
            wav = espeak_wav(question, tmpdir / f"long{i}.wav")
            for streaming in (True, False):
                data, peak = _run(base, wav, tmpdir / f"l{i}{int(streaming)}.wav", streaming, env)
                long_runs[streaming].append({**data["timings"], "chars": len(data["reply"])})
                rss.append(peak)
                print(f"  long{i} {'stream' if streaming else 'seq   '} first_audio "
                      f"{data['timings']['first_audio_s']:.3f}s  {len(data['reply'])} chars  {question}",
                      file=sys.stderr)
    rows = []
    for stage in STAGES:
        s = [r[stage] for r in results[True]]
        n = [r[stage] for r in results[False]]
        rows.append((stage, pct(s, 50), pct(s, 95), pct(n, 50), pct(n, 95)))
    ratio = pct([r["first_audio_s"] for r in results[False]], 50) / pct(
        [r["first_audio_s"] for r in results[True]], 50)
    print(f"\n### Foundation: ask --wav --local ({len(QUESTIONS)} spoken questions, each mode)\n")
    print(f"Machine: {machine()}\n")
    print(table(("stage (s)", "stream p50", "stream p95", "no-stream p50", "no-stream p95"), rows))
    print(f"\nfirst_audio_s p50 ratio (no-streaming / streaming): {ratio:.2f}x")
    stream_long = pct([r["first_audio_s"] for r in long_runs[True]], 50)
    seq_long = pct([r["first_audio_s"] for r in long_runs[False]], 50)
    chars = pct([r["chars"] for r in long_runs[True]], 50)
    print(f"long replies ({len(LONG_REPLIES)} chat requests, replies p50 {chars:.0f} characters): "
          f"first_audio_s p50 {stream_long:.3f} s streaming, {seq_long:.3f} s not, "
          f"ratio {seq_long / stream_long:.2f}x")
    print(f"peak RSS per ask process: max {max(rss):.0f} MiB, p50 {pct(rss, 50):.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
