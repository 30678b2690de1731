"""In-process commands: `ask`, `transcribe`, `speak`, `config show`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, TextIO, TypeVar

from daemon.config import Config, dump_config, load_config
from daemon.errors import (
    BadArgumentError,
    KnowledgeBaseEmptyError,
    KnowledgeBaseError,
    NoSpeechError,
    UnknownEmotionError,
)
from daemon.messages import Emotion, TurnResult

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ask = sub.add_parser("ask", help="ask a question (typed or spoken) and hear the answer",
                         description="Answer a question out loud, grounded in the knowledge base. "
                         "A typed question goes to the running service when there is one (it "
                         "answers through its own speaker, knowledge base and conversation). "
                         "--wav, --out, --kb, --emotion, --no-streaming and --local run in-process instead: "
                         "the models load first (several seconds), the answer plays on audio.output "
                         "(or goes to --out), and the conversation is "
                         "this question alone (the service's history is neither read nor written).")
    ask.add_argument("text", nargs="*", help="the question as text (quotes optional)")
    ask.add_argument("--wav", metavar="FILE", help="the question as audio (WAV/FLAC/MP3, any rate) "
                     "instead of text")
    ask.add_argument("--kb", metavar="DIR", help="knowledge-base folder (default: rag.knowledge_base)")
    ask.add_argument("--out", metavar="FILE.wav",
                     help="write the spoken reply here instead of playing it (.wav, .flac, .ogg or .mp3)")
    ask.add_argument("--emotion", metavar="NAME[=0..1]", help="style of the reply, e.g. humorous=0.8 "
                     "(default: emotion.default; runs in-process)")
    ask.add_argument("--local", action="store_true", help="run in-process even if the service is running")
    ask.add_argument("--no-streaming", action="store_true",
                     help="sequential plan: whole reply, then whole synthesis (for comparison)")
    ask.add_argument("--json", action="store_true", help="print transcript, reply, sources and timings "
                     "(seconds per stage) as JSON")
    ask.set_defaults(handler=cmd_ask)

    tr = sub.add_parser("transcribe", help="print the text spoken in an audio file",
                        description="Print the words spoken in an audio file (runs in-process).")
    tr.add_argument("file", help="WAV/FLAC/MP3 at any sample rate, mono or stereo")
    tr.set_defaults(handler=cmd_transcribe)

    sp = sub.add_parser("speak", help="synthesize text into an audio file (or the default device)",
                        description="Say the text with the configured voice (runs in-process), "
                        "clause by clause as the service's Say does, so a text of any length.")
    sp.add_argument("text", nargs="+", help="what to say (quotes optional)")
    sp.add_argument("--out", metavar="FILE.wav",
                    help="output file, .wav, .flac, .ogg or .mp3 (default: play on the default device)")
    sp.add_argument("--emotion", metavar="NAME[=0..1]", help="voice style where the TTS supports it "
                    "(default: emotion.default)")
    sp.set_defaults(handler=cmd_speak)

    cfg = sub.add_parser("config", help="show the effective configuration",
                         description="Show the effective configuration (defaults and your file, merged).")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = cfg_sub.add_parser("show", help="print the merged config as YAML")
    show.set_defaults(handler=cmd_config_show)


# ------------------------------------------------------------------ helpers
def parse_emotion(spec: str | None, cfg: Config) -> Emotion:
    """``--emotion NAME[=0..1]``; None (not given) is the configured default."""
    if spec is None:
        return Emotion(cfg.emotion.default, cfg.emotion.intensity)
    choices = ", ".join(cfg.emotion.styles)
    if not spec.strip():
        raise BadArgumentError(f"--emotion is empty; choose one of: {choices} (optionally NAME=0..1)")
    name, equals, level = spec.partition("=")
    if name not in cfg.emotion.styles:
        raise UnknownEmotionError(f"unknown emotion {name!r}; choose one of: {choices}")
    if equals and not level.strip():
        raise BadArgumentError(f"--emotion {spec}: no intensity after '='; give one from 0 to 1, "
                               f"e.g. {name}=0.5, or leave out '='")
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
    """The folder exists and holds at least one file the knowledge base would index (by its
    name: a folder of only .csv files is as empty as an empty one)."""
    if folder.exists() and not folder.is_dir():
        raise KnowledgeBaseError(f"knowledge base {folder} is not a folder; pass --kb DIR with a folder of documents")
    if not folder.is_dir():
        raise KnowledgeBaseError(f"knowledge-base folder {folder} does not exist; create it or pass --kb DIR")
    other = _first_document(folder)
    if other is None or isinstance(other, str):
        what = "no documents" if other is None else f"no documents it can read (only files such as {other})"
        raise KnowledgeBaseEmptyError(f"knowledge-base folder {folder} holds {what}; {_ADD_DOCUMENTS}")


_ADD_DOCUMENTS = "add .txt, .md, .pdf, .html or .docx files"


def _first_document(folder: Path) -> Path | str | None:
    """The first file the knowledge base would index; else the name of the first other
    visible file (a str), or None when there is none."""
    from daemon.kb.files import is_candidate, is_ignored, log_name

    other: str | None = None
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if is_ignored(rel) or not path.is_file():
            continue
        if is_candidate(rel):
            return path
        other = other or log_name(str(rel))
    return other


def check_kb_indexed(kb: Any) -> None:
    """After indexing: a folder none of whose documents could be read is as empty as one with
    none (answering would only invent), and the files that failed are named."""
    if kb is None:
        return
    status = kb.status()
    if status["documents"]:
        return
    failed = [f"{name}: {reason}" for name, reason in status["failed"].items() if name != "."]
    if failed:
        shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
        raise KnowledgeBaseEmptyError(f"knowledge-base folder {status['folder']} holds no usable documents "
                                      f"({shown}); {_ADD_DOCUMENTS}")


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if getattr(args, "kb", None):
        cfg = cfg.replace("rag", knowledge_base=str(Path(args.kb).expanduser().resolve()))
    return cfg


class LoadProgress:
    """What `ask` shows on stderr while the in-process pipeline loads.

    On a terminal: each loading step on one rewritten line, and indexing with the progress bar
    of `sottovoce kb rebuild` (steps only without --json: then stdout is for the JSON).
    Elsewhere (a log, a pipe): one line when indexing starts, saying how many files, since
    embedding a large folder can take minutes.
    """

    def __init__(self, stream: TextIO, steps: bool) -> None:
        from daemon.cli.kb import ProgressBar

        self._stream = stream
        self._tty = stream.isatty()
        self._steps = steps and self._tty
        self._bar = ProgressBar(stream) if self._tty else None
        self._noted = False
        self.drew = False

    def __call__(self, msg: str) -> None:
        if self._steps:
            self._line(f"\r\033[K… {msg}")

    def indexing(self, done: int, total: int, name: str) -> None:
        """The knowledge base's files as they are embedded (build_pipeline's ``indexing``)."""
        if self._bar is not None:
            self._bar(done, total, name)
            self.drew = True
        elif not self._noted:
            self._noted = True
            files = "1 file" if total == 1 else f"{total} files"
            print(f"sottovoce: indexing {files} of the knowledge base (new or changed); "
                  "this can take a while", file=self._stream, flush=True)

    def _line(self, text: str) -> None:
        print(text, end="", file=self._stream, flush=True)
        self.drew = True

    def done(self) -> None:
        """Clear the last step line (on a terminal)."""
        if self.drew:
            self._line("\r\033[K")


# ------------------------------------------------------------------ commands
def cmd_ask(args: argparse.Namespace) -> int:
    args.text = " ".join(args.text) if args.text else None
    if (args.text is None) == (args.wav is None):
        raise BadArgumentError("give the question as text or as --wav FILE (one of them)")
    cfg = _config(args)
    emotion = parse_emotion(args.emotion, cfg)
    if args.text is not None:
        check_question(args.text)
    if args.wav and args.out:
        from daemon.audio.filewrite import refuse_same_file

        refuse_same_file(args.wav, args.out, "--wav", "--out")
    if _uses_service(args):
        remote = _try_remote(args)
        if remote is not None:
            return _print_result(args, remote)
    from daemon.audio.fileio import load_audio

    check_kb_folder(Path(cfg.rag.knowledge_base))        # cheap: before the audio is decoded
    audio = load_audio(args.wav, quiet=True) if args.wav else None   # bad audio: before models load
    sink = _output_sink(args, cfg)                       # no device / bad --out: likewise
    result = asyncio.run(_ask_local(args, one_shot(cfg), emotion, audio, sink))
    return _print_result(args, result)


def check_question(text: str) -> None:
    """The limits the service's Ask() sets, so both paths refuse the same questions."""
    from daemon.service.turns import check_text

    check_text(text, what="question")


def _uses_service(args: argparse.Namespace) -> bool:
    """A typed question goes to the service unless something only in-process can do is asked:
    another knowledge base, a file for the reply, a style for this question alone, the
    sequential plan."""
    return bool(args.text) and not (args.local or args.out or args.kb or args.emotion or args.no_streaming)


def one_shot(cfg: Config) -> Config:
    """An in-process question stands alone: a memory-only history, the service's file untouched."""
    return cfg.replace("conversation", history_file="")


def _try_remote(args: argparse.Namespace) -> TurnResult | None:
    try:
        from daemon.cli.remote import remote_ask
    except ImportError:
        return None
    from daemon.errors import ReplyNotSpokenError

    text = args.text
    try:
        answer = remote_ask(text)
    except ReplyNotSpokenError as exc:      # printed as always, then the error (exit 11)
        _print_result(args, TurnResult(transcript=text, reply=exc.reply, sources=tuple(exc.sources),
                                       timings={}))
        sys.stdout.flush()
        raise
    if answer is None:
        return None
    reply, sources, timings = answer
    return TurnResult(transcript=text, reply=reply, sources=tuple(sources), timings=timings)


async def _ask_local(args: argparse.Namespace, cfg: Config, emotion: Emotion, audio: Any,
                     sink: Any) -> TurnResult:
    from daemon.pipeline import build_pipeline
    from daemon.threads import run_blocking
    from daemon.turn import TurnRequest, run_turn

    progress = LoadProgress(sys.stderr, steps=not args.json)
    stages = ("vad", "stt", "kb", "llm", "tts") if audio is not None else ("kb", "llm", "tts")
    pipe = await run_blocking(lambda: build_pipeline(cfg, progress=progress, stages=stages, strict_kb=True,
                                                        indexing=progress.indexing))
    progress.done()
    check_kb_indexed(pipe.kb)
    question, speech_end, stt_s = args.text, time.monotonic(), 0.0
    if audio is not None:
        question, speech_end, stt_s = await run_blocking(_hear, pipe, audio, args.wav)
        check_question(question)
    req = TurnRequest(question=question, turn=1, should_stop=lambda: False, emotion=emotion,
                      streaming=not args.no_streaming, speech_end=speech_end, stt_s=stt_s)
    return await _into_sink(run_turn(pipe, req, sink), sink)


async def _into_sink(work: Awaitable[T], sink: Any) -> T:
    """Await ``work``, then close ``sink`` (the file is put in place, playback finishes). On
    an error or Ctrl-C a file sink's partial audio is thrown away and an existing file kept."""
    try:
        result = await work
    except BaseException:
        discard = getattr(sink, "discard", None)
        if discard is not None:
            discard()
        else:
            await _close_sink(sink)
        raise
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
    """Where the spoken reply goes; raises at once when it cannot go there."""
    if args.out:
        from daemon.audio.sinks import AudioFileSink

        return AudioFileSink(args.out)
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

    audio = load_audio(args.file, quiet=True)
    cfg = load_config(args.config)
    text, _ = WhisperTranscriber(cfg.stt).transcribe(audio)
    if not text.strip():
        raise NoSpeechError(f"no speech heard in {args.file}")
    print(text.strip())
    return 0


def cmd_speak(args: argparse.Namespace) -> int:
    from daemon.stages.speech_text import has_words, to_speakable

    args.text = " ".join(args.text)
    if not has_words(to_speakable(args.text)):
        what = "the text is empty" if not args.text.strip() else "the text has no words to speak"
        raise BadArgumentError(f"nothing to say: {what}")
    cfg = one_shot(load_config(args.config))
    emotion = parse_emotion(args.emotion, cfg)
    sink = _output_sink(args, cfg)               # no device / bad --out: before the voice loads
    from daemon.history import ConversationHistory
    from daemon.pipeline import Pipeline, build_tts
    from daemon.turn import speak_text

    # Said as the service's Say says it: clause by clause, each clause cleaned and synthesized
    # in turn, so a long text (even one with no full stop) never goes to the voice at once.
    pipe = Pipeline(cfg=cfg, llm=None, tts=build_tts(cfg), history=ConversationHistory(0, 0))  # type: ignore[arg-type]

    async def run() -> None:
        await _into_sink(speak_text(pipe, args.text, turn=1, should_stop=lambda: False, emotion=emotion,
                                    sink=sink), sink)

    asyncio.run(run())
    if args.out:
        print(os.fspath(args.out))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(dump_config(load_config(args.config)), end="")
    return 0
