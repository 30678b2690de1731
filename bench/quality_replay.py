"""Replay recorded transcripts through retrieval, selection and (optionally) the LLM.

Whisper's temperature fallback is not repeatable from run to run (docs/quality.md), so two
runs of ``bench.quality`` differ by what the questions were heard as, not only by the change
under test. A replay takes what a run heard (``python -m bench.quality --save-heard FILE``)
and asks the same texts again: the same input every time, so a change to retrieval, the gate,
sentence selection or the prompt is measured like for like. The set ``clean`` is the question
texts themselves (perfect recognition).

    python -m bench.quality_replay [--llm] [clean] bench/heard/*.json

Reported per set and in total: retrieval hit@3 (as in ``bench.quality``), the note handed to
the LLM holds the fact, no-answer questions that were given notes (each would be a claimed
source), and with ``--llm`` the reply text holds the fact and the replies to no-answer
questions that claim a source (seeded per question, like the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from bench.questions import QUALITY, QualityQuestion
from bench.util import machine, table

CLEAN = "clean"


@dataclass
class SetResult:
    name: str
    hits: int = 0
    notes: int = 0
    replies: int = 0
    chat_with_notes: int = 0
    claims: int = 0


def load_set(spec: str) -> tuple[str, list[str]]:
    """(name, heard texts in ``QUALITY`` order) from a ``--save-heard`` file or ``clean``."""
    if spec == CLEAN:
        return CLEAN, [q.text for q in QUALITY]
    path = Path(spec)
    try:
        heard = json.loads(path.read_text())["heard"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not a heard-texts file from bench.quality --save-heard ({exc})") from exc
    if not isinstance(heard, list) or len(heard) != len(QUALITY) or not all(isinstance(h, str) for h in heard):
        raise SystemExit(f"{path}: expected {len(QUALITY)} heard texts, one per bench.questions.QUALITY entry")
    return path.stem, heard


async def _reply(pipe: Any, heard: str, index: int) -> str:
    from bench.quality import _seed, answer
    from daemon.audio.sinks import BufferSink

    _seed(pipe, index)
    return (await answer(pipe, heard, BufferSink())).reply


def replay(pipe: Any, name: str, heard: Sequence[str], with_llm: bool,
           questions: Sequence[QualityQuestion] = QUALITY) -> SetResult:
    from bench.quality import _SOURCE_CLAIM, has_fact, retrieval_hit

    out = SetResult(name)
    for i, (q, text) in enumerate(zip(questions, heard)):
        notes, _ = pipe.find_notes(text)
        if not q.answerable:
            out.chat_with_notes += bool(notes)
            if with_llm:
                out.claims += bool(notes) or bool(_SOURCE_CLAIM.search(asyncio.run(_reply(pipe, text, i))))
            continue
        out.hits += retrieval_hit(pipe, text, q.facts)
        out.notes += any(has_fact(n.text, q.facts) for n in notes)
        if with_llm:
            out.replies += has_fact(asyncio.run(_reply(pipe, text, i)), q.facts)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality_replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="*", default=[CLEAN],
                        help=f"'{CLEAN}' or files written by bench.quality --save-heard (default: {CLEAN})")
    parser.add_argument("--llm", action="store_true", help="also answer each question and check the reply text")
    args = parser.parse_args(argv)
    sets = [load_set(spec) for spec in args.sets]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from bench.quality import _config
    from daemon.pipeline import build_pipeline

    n_kb = sum(q.answerable for q in QUALITY)
    n_chat = len(QUALITY) - n_kb
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(_config(Path(tmp)), strict_kb=True)
        results = [replay(pipe, name, heard, args.llm) for name, heard in sets]
    total = SetResult("all", *(sum(getattr(r, f) for r in results)
                               for f in ("hits", "notes", "replies", "chat_with_notes", "claims")))
    rows = []
    for r in [*results, total] if len(results) > 1 else results:
        k = n_kb * (len(results) if r is total else 1)
        c = n_chat * (len(results) if r is total else 1)
        rows.append((r.name, f"{r.hits}/{k}", f"{r.notes}/{k}", f"{r.replies}/{k}" if args.llm else "-",
                     f"{r.chat_with_notes}/{c}", f"{r.claims}/{c}" if args.llm else "-"))
    print(f"\n### Replay of heard texts ({len(results)} set(s) of {len(QUALITY)} questions)\n")
    print(f"Machine: {machine()}\n")
    print(table(("set", "hit@3", "note holds fact", "reply holds fact", "no-answer given notes",
                        "false source claims"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
