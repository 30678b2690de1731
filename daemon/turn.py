"""One question -> one spoken reply, streamed: retrieval, LLM, clause chunks, TTS, sink.

Streaming mode synthesizes clause 1 while the LLM is still writing clause 2 and hands
audio to the sink as soon as the first chunk exists. ``streaming=False`` reproduces the
sequential plan (whole reply, then whole synthesis, then playback) for comparison.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from daemon.messages import AudioChunk, Emotion, TextChunk, TurnResult
from daemon.threads import iterate_in_thread, run_blocking

if TYPE_CHECKING:
    from daemon.pipeline import Pipeline

_LOGGER = logging.getLogger(__name__)


class AudioSink(Protocol):
    def write(self, chunk: AudioChunk) -> None:
        """Called on the event loop for every synthesized chunk of the current turn."""
        ...


@dataclass
class TurnRequest:
    question: str
    turn: int
    should_stop: Callable[[], bool]
    emotion: Emotion
    streaming: bool = True
    speech_end: float = field(default_factory=time.monotonic)  # monotonic time speech ended
    stt_s: float = 0.0
    on_chunk: Callable[[TextChunk], None] | None = None         # each clause, as it is queued


@dataclass
class _Progress:
    req: TurnRequest
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    first_clause: float | None = None
    first_audio: float | None = None
    chunks: list[TextChunk] = field(default_factory=list)
    reply: list[str] = field(default_factory=list)

    def mark_audio(self) -> None:
        if self.first_audio is None:
            self.first_audio = time.monotonic()


async def run_turn(p: "Pipeline", req: TurnRequest, sink: AudioSink) -> TurnResult:
    """Answer ``req.question`` into ``sink``; returns the reply text, sources and timings."""
    t0 = time.monotonic()
    notes, sources = await run_blocking(p.find_notes, req.question)
    retrieve_s = time.monotonic() - t0
    messages = p.messages_for(req.question, notes, req.emotion)
    prog = _Progress(req)
    if req.streaming:
        await _streamed(p, messages, prog, sink)
    else:
        await _sequential(p, messages, prog, sink)
    end = time.monotonic()
    timings = {
        "stt_s": round(req.stt_s, 4),
        "retrieve_s": round(retrieve_s, 4),
        "llm_first_token_s": round((prog.first_token or end) - t0 - retrieve_s, 4),
        "first_audio_s": round((prog.first_audio or end) - req.speech_end, 4),
        "total_s": round(end - req.speech_end, 4),
    }
    if prog.first_clause is not None and prog.first_audio is not None:
        _LOGGER.info("turn %d: first clause %.3f s after the LLM started, its audio %.3f s later",
                     req.turn, prog.first_clause - t0 - retrieve_s, prog.first_audio - prog.first_clause)
    return TurnResult(
        transcript=req.question,
        reply="".join(prog.reply).strip(),
        sources=tuple(sources) if notes else (),
        timings=timings,
        interrupted=req.should_stop(),
    )


async def _llm_pieces(p: "Pipeline", messages: list, prog: _Progress):  # type: ignore[no-untyped-def]
    req = prog.req
    temperature = p.temperature_for(req.emotion)
    tags = p.prompts.reply_filter()      # a "(Tone: ...)" the model copies is no part of the reply
    gen = iterate_in_thread(lambda: p.llm.stream(
        messages, max_tokens=p.cfg.llm.max_tokens, temperature=temperature,
        should_stop=req.should_stop))
    async for piece in gen:
        if prog.first_token is None:
            prog.first_token = time.monotonic()
        piece = tags.feed(piece)
        if piece:
            prog.reply.append(piece)
            yield piece
        if req.should_stop():
            return
    if rest := tags.flush():
        prog.reply.append(rest)
        yield rest


async def _streamed(p: "Pipeline", messages: list, prog: _Progress, sink: AudioSink) -> None:  # type: ignore[type-arg]
    queue: asyncio.Queue[TextChunk | None] = asyncio.Queue()
    speaker = asyncio.create_task(_speak_queue(p, queue, prog, sink), name=f"tts-turn-{prog.req.turn}")
    chunker = p.new_chunker()
    try:
        async for piece in _llm_pieces(p, messages, prog):
            for clause in chunker.feed(piece):
                _queue_clause(p, clause, prog, queue)
        if not prog.req.should_stop():
            for clause in chunker.flush():
                _queue_clause(p, clause, prog, queue)
        queue.put_nowait(None)
        await speaker
    finally:
        if not speaker.done():
            speaker.cancel()


def _queue_clause(p: "Pipeline", clause: str, prog: _Progress,
                  queue: "asyncio.Queue[TextChunk | None]") -> None:
    speakable = p.speakable(clause)
    chunk = TextChunk(turn=prog.req.turn, text=clause, speakable=speakable, index=len(prog.chunks))
    prog.chunks.append(chunk)
    if prog.req.on_chunk:
        prog.req.on_chunk(chunk)
    if speakable.strip():
        if prog.first_clause is None:
            prog.first_clause = time.monotonic()
        queue.put_nowait(chunk)


async def _speak_queue(p: "Pipeline", queue: "asyncio.Queue[TextChunk | None]",
                       prog: _Progress, sink: AudioSink) -> None:
    while (chunk := await queue.get()) is not None:
        if prog.req.should_stop():
            return
        await _synthesize_into(p, chunk, prog, sink)


async def _synthesize_into(p: "Pipeline", chunk: TextChunk, prog: _Progress, sink: AudioSink) -> None:
    req = prog.req
    rate = p.tts.sample_rate
    gen = iterate_in_thread(lambda: p.tts.synthesize(
        chunk.speakable, emotion=req.emotion, should_stop=req.should_stop))
    async for audio in gen:
        if req.should_stop():
            return
        prog.mark_audio()
        sink.write(AudioChunk(turn=req.turn, samples=np.asarray(audio, dtype=np.float32),
                              sample_rate=rate, chunk_index=chunk.index))


async def _sequential(p: "Pipeline", messages: list, prog: _Progress, sink: AudioSink) -> None:  # type: ignore[type-arg]
    """The original plan: whole reply, then whole synthesis, then playback."""
    async for _ in _llm_pieces(p, messages, prog):
        pass
    text = "".join(prog.reply).strip()
    speakable = p.speakable(text)
    chunk = TextChunk(turn=prog.req.turn, text=text, speakable=speakable, index=0)
    prog.chunks.append(chunk)
    if prog.req.on_chunk:
        prog.req.on_chunk(chunk)
    if not speakable.strip():
        return
    req = prog.req
    audio = await run_blocking(lambda: [
        np.asarray(a, dtype=np.float32)
        for a in p.tts.synthesize(speakable, emotion=req.emotion, should_stop=req.should_stop)])
    if not audio or req.should_stop():
        return
    prog.mark_audio()
    sink.write(AudioChunk(turn=req.turn, samples=np.concatenate(audio),
                          sample_rate=p.tts.sample_rate, chunk_index=0, last=True))


async def speak_text(p: "Pipeline", text: str, turn: int, should_stop: Callable[[], bool],
                     emotion: Emotion, sink: AudioSink,
                     on_chunk: Callable[[TextChunk], None] | None = None) -> None:
    """Speak ``text`` as given (D-Bus Say), clause by clause."""
    req = TurnRequest(question="", turn=turn, should_stop=should_stop, emotion=emotion, on_chunk=on_chunk)
    prog = _Progress(req)
    chunker = p.new_chunker()
    clauses = chunker.feed(text) + chunker.flush()
    for clause in clauses:
        if should_stop():
            return
        speakable = p.speakable(clause)
        chunk = TextChunk(turn=turn, text=clause, speakable=speakable, index=len(prog.chunks))
        prog.chunks.append(chunk)
        if on_chunk:
            on_chunk(chunk)
        if speakable.strip():
            await _synthesize_into(p, chunk, prog, sink)
