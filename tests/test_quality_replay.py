"""`python -m bench.quality_replay`: recorded transcripts asked again through retrieval and
selection on the real knowledge base; bad set files are refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.questions import QUALITY
from bench.quality_replay import CLEAN, load_set, replay
from tests.fixtures_core import ROOT


def test_clean_questions_get_notes_holding_their_facts_and_chat_gets_none(quality_pipeline: Any) -> None:
    name, heard = load_set(CLEAN)
    result = replay(quality_pipeline, name, heard, with_llm=False)
    answerable = sum(q.answerable for q in QUALITY)
    assert (result.hits, result.notes, result.chat_with_notes) == (answerable, answerable, 0)


def test_a_garbled_transcript_set_scores_lower_than_clean(quality_pipeline: Any, tmp_path: Path) -> None:
    # what tiny.en made of a few questions, the rest left clean
    heard = [q.text for q in QUALITY]
    heard[QUALITY.index(next(q for q in QUALITY if "E4" in q.text))] = "What's the miracle before me on the candle?"
    path = tmp_path / "garbled.json"
    path.write_text(json.dumps({"heard": heard}))
    name, texts = load_set(str(path))
    result = replay(quality_pipeline, name, texts, with_llm=False)
    assert name == "garbled" and result.notes == sum(q.answerable for q in QUALITY) - 1


def test_a_file_that_is_not_a_heard_set_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"heard": ["only one"]}))
    out = subprocess.run([sys.executable, "-m", "bench.quality_replay", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and f"expected {len(QUALITY)} heard texts" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_judge_model_hears_each_spoken_reply_too(quality_pipeline: Any, transcriber: Any) -> None:
    """`python -m bench.quality --judge-model M`: every spoken reply is also transcribed by M,
    and the table gets one more row (here tiny.en stands in for the judge)."""
    import asyncio
    import dataclasses

    from bench.quality import Outcome, _ask, summary

    pipe = dataclasses.replace(quality_pipeline, stt=transcriber)
    q = next(q for q in QUALITY if q.answerable and "flash" in q.text)
    o = Outcome(q, "en-us", False, heard=q.text)
    asyncio.run(_ask(pipe, o, judge=transcriber))
    assert o.fact_in_text and o.round_trip_judge.strip(), (o.reply, o.round_trip_judge)
    with_judge = {m: v for m, v, _ in summary([o], ("", ""), judge="tiny")}
    n = int(o.fact_spoken_judge)
    assert with_judge["fact in spoken round trip, heard by tiny"] == f"{100 * n}% ({n}/1)"
    assert not any("heard by" in m for m, _, _ in summary([o], ("", "")))
