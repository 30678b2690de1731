"""Answer-quality benchmark: spoken questions over the sample knowledge base, end to end.

Every question is spoken by espeak-ng (several voices, some with background noise mixed in
by sox), heard by the pipeline's own speech recognition (knowledge-base biasing included),
answered by ``run_turn`` into a buffer, and the spoken reply is transcribed back. Models load
once, in this process; the index lives in a scratch folder and history is memory only.

    python -m bench quality        # or: python -m bench.quality [--details]

Reported: STT word error rate (with and without the knowledge-base biasing, and on jfk.flac),
retrieval hit@3 (a top-3 passage that clears the relevance gate holds the fact), answers whose
text holds the fact, answers whose spoken audio, transcribed back, still holds it, and false
source claims on questions the knowledge base cannot answer.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.questions import QUALITY, QualityQuestion
from bench.util import espeak_wav, machine, pct, table

ROOT = Path(__file__).resolve().parent.parent
JFK = ROOT / "tests" / "data" / "jfk.flac"
JFK_TEXT = "And so, my fellow Americans, ask not what your country can do for you, " \
    "ask what you can do for your country."
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3")
NOISE_EVERY = 3              # every third question has background noise mixed in
NOISE_SNR_DB = 15.0
# A reply that says where it looked claims a source ("according to the manual", "your notes").
_SOURCE_CLAIM = re.compile(r"\baccording to\b|\bsources?:|\b(?:my|your|the|these|those|this) (?:notes?|documents?|"
                           r"files?|manual|handbook|knowledge base|sources?|records?)\b", re.IGNORECASE)


@dataclass
class Outcome:
    """What happened to one question."""

    q: QualityQuestion
    voice: str
    noisy: bool
    heard: str = ""
    heard_plain: str = ""            # without knowledge-base biasing
    hit: bool = False
    reply: str = ""
    sources: tuple[str, ...] = ()
    round_trip: str = ""
    round_trip_judge: str = ""       # the same reply heard by --judge-model, if given
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fact_in_text(self) -> bool:
        return has_fact(self.reply, self.q.facts)

    @property
    def fact_spoken(self) -> bool:
        return has_fact(self.round_trip, self.q.facts)

    @property
    def fact_spoken_judge(self) -> bool:
        return has_fact(self.round_trip_judge, self.q.facts)

    @property
    def false_claim(self) -> bool:
        return bool(self.sources) or bool(_SOURCE_CLAIM.search(self.reply))


# ------------------------------------------------------------------ text measures
def normalize(text: str) -> str:
    """Lower case, punctuation gone, codes split ("K-420" and "K420" -> "k 420")."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = re.sub(r"(?<=\d)[.:](?=\d)", "_", text)        # keep 1.7 and 6:45 as one token
    text = re.sub(r"[^a-z0-9_' ]+", " ", text)
    text = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text)
    return " ".join(text.replace("'", "").split())


def has_fact(text: str, facts: Sequence[str]) -> bool:
    norm = f" {normalize(text)} "
    return any(f" {normalize(f)} " in norm or (len(normalize(f)) > 4 and normalize(f) in norm) for f in facts)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length)."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def wer(pairs: Sequence[tuple[str, str]]) -> float:
    errors = [word_errors(ref, hyp) for ref, hyp in pairs]
    return sum(e for e, _ in errors) / max(1, sum(n for _, n in errors))


# ------------------------------------------------------------------ audio
def _sox(*args: str) -> None:
    """sox with ``-R``: its dither and noise the same on every run (see ``espeak_wav``)."""
    subprocess.run(["sox", "-R", *args], check=True, capture_output=True)


def spoken(q_index: int, text: str, folder: Path) -> tuple[Path, str, bool]:
    """The question as a 16 kHz WAV: voice by turn, every third with pink noise at 15 dB SNR
    (``sox -R``: the same dither and noise on every run, so runs compare)."""
    voice = VOICES[q_index % len(VOICES)]
    noisy = q_index % NOISE_EVERY == NOISE_EVERY - 1
    clean = espeak_wav(text, folder / f"q{q_index}.wav", voice=voice, pad_s=0.3)
    if not noisy:
        return clean, voice, noisy
    import soundfile as sf

    speech, rate = sf.read(str(clean), dtype="float32")
    noise_file = folder / f"n{q_index}.wav"
    _sox("-n", "-r", "16000", "-c", "1", "-b", "16", str(noise_file), "synth", f"{len(speech) / rate:.3f}",
         "pinknoise", "vol", "0.5")
    noise, _ = sf.read(str(noise_file), dtype="float32")
    noise = np.resize(noise, len(speech))          # sox rounds the length to whole samples
    gain = np.sqrt(np.mean(speech ** 2) / (np.mean(noise ** 2) * 10 ** (NOISE_SNR_DB / 10)))
    mixed = folder / f"q{q_index}.noisy.wav"
    sf.write(str(mixed), np.clip(speech + gain * noise, -1, 1), rate, subtype="PCM_16")
    return mixed, voice, noisy


# ------------------------------------------------------------------ the run
def _config(tmp: Path) -> Any:
    from daemon.config import load_config

    cfg = load_config(use_user_file=False)
    cfg = cfg.replace("rag", index_dir=str(tmp / "index"))
    return cfg.replace("conversation", history_file="")


def retrieval_hit(pipe: Any, heard: str, facts: Sequence[str]) -> bool:
    """Retrieval hit@3: a top-3 passage for ``heard`` clears the relevance gate and holds the fact."""
    passages = pipe.kb.retrieve(heard)[:3]
    return pipe.kb.is_relevant(passages) and any(has_fact(p.text, facts) for p in passages)


async def answer(pipe: Any, question: str, sink: Any) -> Any:
    """One whole turn (retrieval, LLM, TTS into ``sink``) with the configured emotion, as the
    CLI runs it; returns its ``TurnResult``."""
    from daemon.messages import Emotion
    from daemon.turn import TurnRequest, run_turn

    emotion = Emotion(pipe.cfg.emotion.default, pipe.cfg.emotion.intensity)
    req = TurnRequest(question=question, turn=1, should_stop=lambda: False, emotion=emotion)
    return await run_turn(pipe, req, sink)


async def _ask(pipe: Any, o: Outcome, judge: Any = None) -> None:
    from daemon.audio.fileio import resample
    from daemon.audio.sinks import BufferSink

    start = time.monotonic()
    o.hit = retrieval_hit(pipe, o.heard, o.q.facts)
    sink = BufferSink()
    result = await answer(pipe, o.heard, sink)
    o.reply, o.sources = result.reply, tuple(result.sources)
    o.seconds += time.monotonic() - start
    if sink.chunks:
        spoken_reply = resample(sink.audio(), sink.sample_rate, 16000)
        o.round_trip, _ = pipe.stt.transcribe(spoken_reply)
        if judge is not None:
            o.round_trip_judge, _ = judge.transcribe(spoken_reply)


def _seed(pipe: Any, n: int) -> None:
    """The same random draws for a question on every run (Whisper's temperature fallback and
    the LLM sample), so two runs differ only by what was changed."""
    import ctranslate2

    ctranslate2.set_random_seed(1000 + n)
    llama = getattr(pipe.llm, "_llm", None)
    if llama is not None and hasattr(llama, "set_seed"):
        llama.set_seed(1000 + n)


def _listen(pipe: Any, o: Outcome, wav: Path) -> None:
    from daemon.audio.fileio import load_audio
    from daemon.cli.local import _hear

    _seed(pipe, o.extra.get("index", 0))
    start = time.monotonic()
    audio = load_audio(wav)
    o.heard, _, _ = _hear(pipe, audio, wav.name)          # the CLI's own path, biasing included
    o.seconds = time.monotonic() - start
    o.heard_plain, _ = pipe.stt.transcribe(audio, hotwords=None)


async def run_all(pipe: Any, questions: Sequence[QualityQuestion], folder: Path,
                  judge: Any = None) -> list[Outcome]:
    # Every question is heard before any reply is transcribed back: CTranslate2 seeds its
    # sampler once per worker thread, so Whisper's fallback draws run on from one call to the
    # next, and hearing replies in between made what the questions were heard as depend on
    # the replies (an LLM change moved the STT numbers).
    out = []
    for i, q in enumerate(questions):
        wav, voice, noisy = spoken(i, q.text, folder)
        o = Outcome(q, voice, noisy, extra={"index": i})
        _listen(pipe, o, wav)
        out.append(o)
    for i, (q, o) in enumerate(zip(questions, out)):
        _seed(pipe, i)
        await _ask(pipe, o, judge)
        mark = ("hit" if o.hit else "MISS") + (" fact" if o.fact_in_text else " NOFACT") if q.answerable \
            else ("CLAIM" if o.false_claim else "chat")
        print(f"  q{i:02d} {o.voice:14s}{'noisy' if o.noisy else '     '} {mark:12s} heard={o.heard!r} "
              f"reply={o.reply[:90]!r}", file=sys.stderr, flush=True)
    return out


def summary(outcomes: list[Outcome], jfk: tuple[str, str], judge: str = "") -> list[tuple[str, str, str]]:
    kb = [o for o in outcomes if o.q.answerable]
    chat = [o for o in outcomes if not o.q.answerable]
    noisy = [o for o in outcomes if o.noisy]

    def share(items: list[Outcome], attr: str) -> str:
        n = sum(bool(getattr(o, attr)) for o in items)
        return f"{100 * n / max(1, len(items)):.0f}% ({n}/{len(items)})"

    judged = [(f"fact in spoken round trip, heard by {judge}", share(kb, "fact_spoken_judge"), "")
              ] if judge else []
    return [
        ("STT WER, all questions (biased)", f"{100 * wer([(o.q.text, o.heard) for o in outcomes]):.1f}%", ""),
        ("STT WER, all questions (no biasing)", f"{100 * wer([(o.q.text, o.heard_plain) for o in outcomes]):.1f}%",
         ""),
        ("STT WER, noisy questions (biased)", f"{100 * wer([(o.q.text, o.heard) for o in noisy]):.1f}%", ""),
        ("STT WER, no-answer questions (biased)", f"{100 * wer([(o.q.text, o.heard) for o in chat]):.1f}%", ""),
        ("STT WER, jfk.flac (biased / plain)",
         f"{100 * wer([(JFK_TEXT, jfk[0])]):.1f}% / {100 * wer([(JFK_TEXT, jfk[1])]):.1f}%", "no worse"),
        ("retrieval hit@3", share(kb, "hit"), ">= 95%"),
        ("fact in reply text", share(kb, "fact_in_text"), ">= 90%"),
        ("fact in spoken round trip", share(kb, "fact_spoken"), ">= 85%"),
        *judged,
        ("false source claims (no-answer questions)", share(chat, "false_claim").split(" ")[1].strip("()"), "0"),
        ("seconds per question p50 / p95",
         f"{pct([o.seconds for o in outcomes], 50):.2f} / {pct([o.seconds for o in outcomes], 95):.2f}", ""),
    ]


def misses(outcomes: list[Outcome]) -> list[tuple[str, ...]]:
    rows = []
    for o in outcomes:
        bad = [name for name, ok in (("hit", o.hit), ("text", o.fact_in_text), ("spoken", o.fact_spoken))
               if o.q.answerable and not ok] + (["claim"] if not o.q.answerable and o.false_claim else [])
        if bad:
            rows.append((o.q.text, o.heard, " ".join(o.reply.split())[:120], ", ".join(bad)))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from daemon.audio.fileio import load_audio
    from daemon.pipeline import build_pipeline

    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--details", action="store_true", help="also print every answer and how it was heard back")
    parser.add_argument("--stt-model", metavar="MODEL",
                        help="another speech model (stt.model: a CTranslate2 Whisper folder or package:NAME)")
    parser.add_argument("--judge-model", metavar="MODEL",
                        help="also transcribe each spoken reply with this speech model (unbiased), "
                             "to tell what the TTS said apart from what tiny.en can write back")
    parser.add_argument("--save-heard", metavar="FILE", type=Path,
                        help="write what each question was heard as, for python -m bench.quality_replay")
    args = parser.parse_args([] if argv is None else argv)        # python -m bench: no options
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = _config(folder)
        if args.stt_model:
            cfg = cfg.replace("stt", model=args.stt_model)
        t0 = time.monotonic()
        pipe = build_pipeline(cfg, strict_kb=True)
        load_s = time.monotonic() - t0
        jfk_audio = load_audio(JFK)
        jfk = (pipe.transcribe(jfk_audio), pipe.stt.transcribe(jfk_audio, hotwords=None)[0])
        judge = None
        if args.judge_model:
            from daemon.stages.stt import WhisperTranscriber

            judge = WhisperTranscriber(cfg.replace("stt", model=args.judge_model).stt)
        outcomes = asyncio.run(run_all(pipe, QUALITY, folder, judge))
    n_kb = sum(q.answerable for q in QUALITY)
    print(f"\n### Answer quality: {len(QUALITY)} spoken questions ({n_kb} answerable, "
          f"{len(QUALITY) - n_kb} not), voices {', '.join(VOICES)}, every {NOISE_EVERY}rd with pink noise "
          f"at {NOISE_SNR_DB:.0f} dB SNR\n")
    print(f"Machine: {machine()}; speech model {cfg.stt.model}; models loaded in {load_s:.1f} s\n")
    print(table(("metric", "value", "target"), summary(outcomes, jfk, args.judge_model or "")))
    rows = misses(outcomes)
    if rows:
        print("\nMisses:\n")
        print(table(("question", "heard", "reply", "missed"), rows))
    if args.save_heard:
        args.save_heard.write_text(json.dumps(
            {"recorded": f"python -m bench.quality, {time.strftime('%Y-%m-%d')}, {machine()}",
             "heard": [o.heard for o in outcomes]}, indent=1) + "\n")
        print(f"\nheard texts written to {args.save_heard}")
    if args.details:
        print("\nAll answers:\n")
        print(table(("question", "heard", "reply", "sources", "reply heard back"),
                    [(o.q.text, o.heard, " ".join(o.reply.split()), ", ".join(o.sources), o.round_trip)
                     for o in outcomes]))


if __name__ == "__main__":
    main(sys.argv[1:])
