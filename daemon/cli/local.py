"""In-process commands: `ask`, `transcribe`, `speak`, `config show`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from daemon.config import Config, dump_config, load_config
from daemon.errors import (
    BadArgumentError,
    KnowledgeBaseEmptyError,
    KnowledgeBaseError,
    NoSpeechError,
    UnknownEmotionError,
)
from daemon.messages import Emotion, TurnResult


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ask = sub.add_parser("ask", help="ask a question (typed or spoken) and hear the answer",
                         description="Answer a question out loud, grounded in the knowledge base. "
                         "Uses the running service when there is one, otherwise runs in-process.")
    src = ask.add_mutually_exclusive_group(required=True)
    src.add_argument("text", nargs="?", help="the question as text")
    src.add_argument("--wav", metavar="FILE", help="the question as audio (WAV/FLAC/MP3, any rate)")
    ask.add_argument("--kb", metavar="DIR", help="knowledge-base folder (default: rag.knowledge_base)")
    ask.add_argument("--out", metavar="FILE.wav", help="write the spoken reply here instead of playing it")
    ask.add_argument("--emotion", metavar="NAME[=0..1]", help="style of the reply, e.g. humorous=0.8")
    ask.add_argument("--local", action="store_true", help="run in-process even if the service is running")
    ask.add_argument("--no-streaming", action="store_true",
                     help="sequential plan: whole reply, then whole synthesis (for comparison)")
    ask.add_argument("--json", action="store_true", help="print transcript, reply, sources and timings as JSON")
    ask.set_defaults(handler=cmd_ask)

    tr = sub.add_parser("transcribe", help="print the text spoken in an audio file")
    tr.add_argument("file", help="WAV/FLAC/MP3 at any sample rate, mono or stereo")
    tr.set_defaults(handler=cmd_transcribe)

    sp = sub.add_parser("speak", help="synthesize text into a WAV file (or the default device)")
    sp.add_argument("text", help="what to say")
    sp.add_argument("--out", metavar="FILE.wav", help="output WAV (default: play on the default device)")
    sp.add_argument("--emotion", metavar="NAME[=0..1]", help="voice style where the TTS supports it")
    sp.set_defaults(handler=cmd_speak)

    cfg = sub.add_parser("config", help="show the effective configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = cfg_sub.add_parser("show", help="print the merged config as YAML")
    show.set_defaults(handler=cmd_config_show)


# ------------------------------------------------------------------ helpers
def parse_emotion(spec: str | None, cfg: Config) -> Emotion:
    if not spec:
        return Emotion(cfg.emotion.default, cfg.emotion.intensity)
    name, _, level = spec.partition("=")
    if name not in cfg.emotion.styles:
        raise UnknownEmotionError(
            f"unknown emotion {name!r}; choose one of: {', '.join(cfg.emotion.styles)}")
    intensity = cfg.emotion.intensity
    if level:
        try:
            intensity = float(level)
        except ValueError:
            raise BadArgumentError(f"emotion intensity {level!r} is not a number (0 to 1)") from None
        if not 0.0 <= intensity <= 1.0:
            raise BadArgumentError(f"emotion intensity {intensity} is out of range (0 to 1)")
    return Emotion(name, intensity)


def check_kb_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise KnowledgeBaseError(f"knowledge-base folder {folder} does not exist; create it or pass --kb DIR")
    if not any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*")):
        raise KnowledgeBaseEmptyError(
            f"knowledge-base folder {folder} holds no documents; add .txt/.md/.pdf files")


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if getattr(args, "kb", None):
        cfg = cfg.replace("rag", knowledge_base=str(Path(args.kb).expanduser().resolve()))
    return cfg


def _progress(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if getattr(args, "json", False) or not sys.stderr.isatty():
        return None
    return lambda msg: print(f"\r\033[K… {msg}", end="", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ commands
def cmd_ask(args: argparse.Namespace) -> int:
    cfg = _config(args)
    emotion = parse_emotion(args.emotion, cfg)
    if args.text is not None and not args.text.strip():
        raise BadArgumentError("the question is empty")
    if not args.local and args.text and not args.out and not args.no_streaming:
        remote = _try_remote(args.text)
        if remote is not None:
            return _print_result(args, remote)
    from daemon.audio.fileio import load_audio

    audio = load_audio(args.wav) if args.wav else None   # bad audio fails before models load
    check_kb_folder(Path(cfg.rag.knowledge_base))
    result = asyncio.run(_ask_local(args, cfg, emotion, audio))
    return _print_result(args, result)


def _try_remote(text: str) -> TurnResult | None:
    try:
        from daemon.cli.remote import remote_ask
    except ImportError:
        return None
    answer = remote_ask(text)
    if answer is None:
        return None
    reply, sources = answer
    return TurnResult(transcript=text, reply=reply, sources=tuple(sources), timings={})


async def _ask_local(args: argparse.Namespace, cfg: Config, emotion: Emotion, audio: Any) -> TurnResult:
    from daemon.pipeline import build_pipeline
    from daemon.threads import run_blocking
    from daemon.turn import TurnRequest, run_turn

    progress = _progress(args)
    stages = ("vad", "stt", "kb", "llm", "tts") if audio is not None else ("kb", "llm", "tts")
    pipe = await run_blocking(lambda: build_pipeline(cfg, progress=progress, stages=stages, strict_kb=True))
    if progress:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    question, speech_end, stt_s = args.text, time.monotonic(), 0.0
    if audio is not None:
        question, speech_end, stt_s = await run_blocking(_hear, pipe, audio, args.wav)
    sink = _output_sink(args, cfg)
    req = TurnRequest(question=question, turn=1, should_stop=lambda: False, emotion=emotion,
                      streaming=not args.no_streaming, speech_end=speech_end, stt_s=stt_s)
    try:
        result = await run_turn(pipe, req, sink)
    finally:
        await _close_sink(sink)
    return result


def _hear(pipe: Any, audio: Any, name: str) -> tuple[str, float, float]:
    """Endpoint a whole file like the live path: speech ends at its last voiced frame."""
    from daemon.stages.vad import find_speech, speech_clip

    span = find_speech(pipe.vad_model, audio)
    speech_end = time.monotonic()           # the last voiced frame has been read
    if span is None:
        raise NoSpeechError(f"no speech heard in {name}")
    clip = speech_clip(audio, span)
    t = time.monotonic()
    text = pipe.transcribe(clip)
    return text, speech_end, time.monotonic() - t


def _output_sink(args: argparse.Namespace, cfg: Config) -> Any:
    if args.out:
        from daemon.audio.sinks import WavFileSink

        return WavFileSink(args.out)
    from daemon.audio.playback import DeviceSink

    return DeviceSink(cfg.audio)


async def _close_sink(sink: Any) -> None:
    result = sink.close()
    if asyncio.iscoroutine(result):
        await result


def _print_result(args: argparse.Namespace, result: TurnResult) -> int:
    if args.json:
        print(json.dumps({
            "transcript": result.transcript,
            "reply": result.reply,
            "sources": list(result.sources),
            "timings": dict(result.timings),
        }, ensure_ascii=False))
        return 0
    if getattr(args, "wav", None):
        print(f"heard: {result.transcript}")
    print(result.reply)
    if result.sources:
        print(f"sources: {', '.join(result.sources)}")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from daemon.audio.fileio import load_audio
    from daemon.stages.stt import WhisperTranscriber

    audio = load_audio(args.file)
    cfg = load_config(args.config)
    text, _ = WhisperTranscriber(cfg.stt).transcribe(audio)
    if not text.strip():
        raise NoSpeechError(f"no speech heard in {args.file}")
    print(text.strip())
    return 0


def cmd_speak(args: argparse.Namespace) -> int:
    if not args.text.strip():
        raise BadArgumentError("nothing to say: the text is empty")
    cfg = load_config(args.config)
    emotion = parse_emotion(args.emotion, cfg)
    from daemon.pipeline import build_tts
    from daemon.stages.speech_text import to_speakable

    tts = build_tts(cfg)
    speakable = to_speakable(args.text)

    async def run() -> None:
        from daemon.messages import AudioChunk

        sink = _output_sink(args, cfg)
        try:
            for i, samples in enumerate(tts.synthesize(speakable, emotion=emotion)):
                sink.write(AudioChunk(turn=1, samples=samples, sample_rate=tts.sample_rate, chunk_index=i))
        finally:
            await _close_sink(sink)

    asyncio.run(run())
    if args.out:
        print(os.fspath(args.out))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(dump_config(load_config(args.config)), end="")
    return 0
