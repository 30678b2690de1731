"""The controller: owns the state machine and turns; the D-Bus class is a thin adapter over it.

States: starting -> listening -> hearing -> thinking -> speaking -> listening, plus paused
and error. Microphone frames arrive on the event loop (one bridge, in the devices layer);
inference runs in worker threads; barge-in goes through the one InterruptionScope.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from daemon import __version__
from daemon.config import Config
from daemon.errors import BadArgumentError, SottovoceError, UnknownEmotionError
from daemon.interruption import InterruptionScope
from daemon.messages import (
    AudioChunk, Emotion, ErrorEvent, IndexUpdatedEvent, InterruptedEvent, PropertyChanged,
    ReplyEvent, ServiceEvent, StateChanged, TextChunk, TranscriptEvent, TurnResult,
)
from daemon.pipeline import Pipeline
from daemon.service.events import EventHub
from daemon.service.hearing import Hearing
from daemon.threads import run_blocking
from daemon.turn import TurnRequest, run_turn

_LOGGER = logging.getLogger(__name__)
MAX_TEXT = 2000


class AudioOutput(Protocol):
    """What the controller needs from a speaker (device or file)."""

    def play(self, samples: np.ndarray, sample_rate: int, tag: tuple[int, int]) -> None: ...
    def stop_now(self) -> Mapping[tuple[int, int], float]:
        """Stop at once, drop queued audio; fraction (0-1) played of each (turn, clause) tag."""
        ...
    async def wait_done(self) -> None: ...


class AssistantController:
    """Implements :class:`daemon.service.api.Controller`."""

    def __init__(self, cfg: Config, output: AudioOutput, on_fatal: Callable[[BaseException], None]) -> None:
        self.cfg = cfg
        self.pipe: Pipeline | None = None
        self.output = output
        self.scope = InterruptionScope()
        self.scope.add_hook(self._stop_output)
        self.hub = EventHub()
        self.hearing: Hearing | None = None
        self._on_fatal = on_fatal
        self._state = "starting"
        self._paused = False
        self._emotion = Emotion(cfg.emotion.default, cfg.emotion.intensity)
        self._last_transcript = ""
        self._last_reply = ""
        self._device_error = ""
        self._turn_task: asyncio.Task[TurnResult] | None = None
        self._turn_chunks: list[TextChunk] = []
        self._turn_question = ""
        self._turn_started = 0.0
        self.last_timings: dict[str, float] = {}
        self.last_first_sound = 0.0

    # ------------------------------------------------------------ lifecycle
    def attach(self, pipe: Pipeline) -> None:
        """Models are loaded: start listening."""
        self.pipe = pipe
        self.hearing = Hearing(self.cfg.vad, pipe, self)
        if pipe.kb is not None:
            pipe.kb.start_watching(self._index_updated_threadsafe(asyncio.get_running_loop()))
        self._set_state("paused" if self._paused else "listening")

    def _index_updated_threadsafe(self, loop: asyncio.AbstractEventLoop) -> Callable[[int, int], None]:
        def on_update(documents: int, chunks: int) -> None:
            loop.call_soon_threadsafe(self._index_updated, documents, chunks)
        return on_update

    def _index_updated(self, documents: int, chunks: int) -> None:
        self.hub.publish(IndexUpdatedEvent(documents, chunks))
        self.hub.publish(PropertyChanged("KnowledgeBase"))

    async def close(self) -> None:
        self.scope.interrupt()
        if self._turn_task and not self._turn_task.done():
            self._turn_task.cancel()
        if self.pipe is not None and self.pipe.kb is not None:
            self.pipe.kb.stop()

    # --------------------------------------------------------- properties
    @property
    def state(self) -> str:
        return self._state

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def emotion(self) -> Emotion:
        return self._emotion

    @property
    def last_transcript(self) -> str:
        return self._last_transcript

    @property
    def last_reply(self) -> str:
        return self._last_reply

    @property
    def version(self) -> str:
        return __version__

    def knowledge_base_info(self) -> Mapping[str, Any]:
        kb = self.pipe.kb if self.pipe else None
        if kb is None:
            return {"documents": 0, "chunks": 0, "last_indexed": 0.0, "failed": {}}
        return kb.status()

    def models_info(self) -> Mapping[str, str]:
        c = self.cfg
        return {
            "vad": c.vad.model, "stt": c.stt.model, "llm": f"{c.llm.engine}:{c.llm.model}",
            "tts": f"{getattr(self.pipe.tts, 'name', c.tts.engine) if self.pipe else c.tts.engine}",
            "embeddings": c.rag.embedding_model, "profile": c.profile,
        }

    def emotion_names(self) -> tuple[str, ...]:
        return tuple(self.cfg.emotion.styles)

    def subscribe(self, callback: Callable[[ServiceEvent], None]) -> Callable[[], None]:
        return self.hub.subscribe(callback)

    # ------------------------------------------------------------- state
    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if self.hearing is not None:
            self.hearing.assistant_speaking(state in ("thinking", "speaking"))
        _LOGGER.info("state: %s", state)
        self.hub.publish(StateChanged(state))
        self.hub.publish(PropertyChanged("State"))

    def _idle_state(self) -> str:
        if self._device_error:
            return "error"
        return "paused" if self._paused else "listening"

    @property
    def busy(self) -> bool:
        return self._turn_task is not None and not self._turn_task.done()

    def report_error(self, code: str, message: str) -> None:
        _LOGGER.error("%s: %s", code, message)
        self.hub.publish(ErrorEvent(code, message))

    def device_error(self, message: str) -> None:
        """The microphone or speaker is missing; the devices layer keeps reconnecting."""
        self._device_error = message
        self.report_error("Device", message)
        if not self.busy:
            self._set_state("error")

    def device_recovered(self) -> None:
        if self._device_error:
            _LOGGER.info("audio device back")
        self._device_error = ""
        if not self.busy and self._state == "error":
            self._set_state(self._idle_state())

    # ------------------------------------------------------------ hearing
    def speech_started(self) -> None:
        if not self.busy and self._state in ("listening", "error"):
            self._set_state("hearing")

    def speech_dropped(self) -> None:
        if self._state == "hearing":
            self._set_state(self._idle_state())

    def barge_in(self) -> None:
        if self.busy:
            _LOGGER.info("barge-in")
            self._interrupt_turn()
            self._set_state("hearing")

    def heard(self, text: str, speech_end: float, stt_s: float) -> None:
        """A complete utterance was transcribed: answer it."""
        if not text:
            self.speech_dropped()
            return
        self._start_turn(text, speech_end, stt_s, spoken=True)

    # -------------------------------------------------------------- turns
    def _start_turn(self, question: str, speech_end: float, stt_s: float, spoken: bool) -> asyncio.Task[TurnResult]:
        if self.busy:
            self._interrupt_turn()
        assert self.pipe is not None
        turn = self.scope.begin_turn()
        self._turn_chunks = []
        self._turn_question = question
        self._last_transcript = question
        self.hub.publish(TranscriptEvent(question))
        self.hub.publish(PropertyChanged("LastTranscript"))
        self._set_state("thinking")
        req = TurnRequest(question=question, turn=turn, should_stop=self.scope.stopper(turn),
                          emotion=self._emotion, speech_end=speech_end, stt_s=stt_s,
                          on_chunk=self._turn_chunks.append)
        task = asyncio.create_task(self._turn(req), name=f"turn-{turn}")
        self.scope.track(task)  # type: ignore[arg-type]
        self._turn_task = task
        return task

    async def _turn(self, req: TurnRequest) -> TurnResult:
        assert self.pipe is not None
        try:
            result = await run_turn(self.pipe, req, _OutputSink(self, req.turn))
        except asyncio.CancelledError:
            raise
        except SottovoceError as exc:
            self.report_error(exc.code, str(exc))
            self._finish_turn(req.turn)
            raise
        except Exception as exc:
            self.report_error("Stage", f"the reply failed: {exc}")
            _LOGGER.exception("turn %d failed", req.turn)
            self._finish_turn(req.turn)
            raise SottovoceError(f"the reply failed: {exc}") from exc
        self.last_timings = dict(result.timings)
        _LOGGER.info("turn %d timings: %s", req.turn,
                     ", ".join(f"{k} {v:.3f}" for k, v in result.timings.items()))
        if not self.scope.is_current(req.turn):
            return result
        self._last_reply = result.reply
        self.hub.publish(ReplyEvent(result.reply, tuple(result.sources)))
        self.hub.publish(PropertyChanged("LastReply"))
        asyncio.create_task(self._wait_playback(req.turn, result.reply), name=f"playback-{req.turn}")
        return result

    async def _wait_playback(self, turn: int, reply: str) -> None:
        await self.output.wait_done()
        if self.scope.is_current(turn):
            assert self.pipe is not None
            self.pipe.history.add(self._turn_question, reply)
            self._finish_turn(turn)

    def _finish_turn(self, turn: int) -> None:
        if self.scope.is_current(turn):
            self._set_state(self._idle_state())

    def first_sound(self, t: float) -> None:
        """The speaker emitted the first sample of a reply (for latency measurement)."""
        self.last_first_sound = t

    def audio_started(self, turn: int) -> None:
        if self.scope.is_current(turn) and self._state == "thinking":
            self._set_state("speaking")

    def _stop_output(self) -> None:
        self._last_played = self.output.stop_now()

    def _interrupt_turn(self) -> str:
        """Cancel the running turn; history keeps only what was actually played."""
        chunks, question, turn = list(self._turn_chunks), self._turn_question, self.scope.turn
        self.scope.interrupt()
        played = getattr(self, "_last_played", {}) or {}
        spoken = spoken_part(chunks, played, turn)
        if self.pipe is not None and question:
            self.pipe.history.add(question, spoken)
        self._turn_chunks = []
        self.hub.publish(InterruptedEvent(spoken))
        return spoken

    # ----------------------------------------------------------- commands
    async def pause(self) -> None:
        self._paused = True
        if self.hearing is not None:
            self.hearing.reset()
        self.hub.publish(PropertyChanged("Paused"))
        if not self.busy:
            self._set_state(self._idle_state())

    async def resume(self) -> None:
        self._paused = False
        if self.hearing is not None:
            self.hearing.reset()
        self.hub.publish(PropertyChanged("Paused"))
        if not self.busy:
            self._set_state(self._idle_state())

    async def interrupt(self) -> None:
        if self.busy or self._state in ("thinking", "speaking"):
            self._interrupt_turn()
            self._set_state(self._idle_state())

    async def set_emotion(self, name: str, intensity: float) -> None:
        if name not in self.cfg.emotion.styles:
            raise UnknownEmotionError(
                f"unknown emotion {name!r}; choose one of: {', '.join(self.cfg.emotion.styles)}")
        if not 0.0 <= intensity <= 1.0:
            raise BadArgumentError(f"intensity {intensity} is out of range: give a value from 0 to 1")
        self._emotion = Emotion(name, float(intensity))
        self.hub.publish(PropertyChanged("Emotion"))

    async def ask(self, text: str) -> TurnResult:
        text = _check_text(text)
        self._require_ready()
        return await self._start_turn(text, time.monotonic(), 0.0, spoken=False)

    async def say(self, text: str) -> None:
        text = _check_text(text)
        self._require_ready()
        assert self.pipe is not None
        if self.busy:
            self._interrupt_turn()
        turn = self.scope.begin_turn()
        self._turn_chunks, self._turn_question = [], ""
        self._set_state("thinking")
        task = asyncio.create_task(self._say(text, turn), name=f"say-{turn}")
        self.scope.track(task)  # type: ignore[arg-type]
        self._turn_task = task  # type: ignore[assignment]
        await task

    async def _say(self, text: str, turn: int) -> TurnResult:
        assert self.pipe is not None
        from daemon.turn import speak_text

        await speak_text(self.pipe, text, turn, self.scope.stopper(turn), self._emotion,
                         _OutputSink(self, turn), self._turn_chunks.append)
        asyncio.create_task(self._wait_playback_say(turn))
        return TurnResult(transcript="", reply=text, sources=(), timings={})

    async def _wait_playback_say(self, turn: int) -> None:
        await self.output.wait_done()
        self._finish_turn(turn)

    async def reindex(self) -> None:
        self._require_ready()
        assert self.pipe is not None
        if self.pipe.kb is None:
            raise SottovoceError("the knowledge base is not available")
        kb = self.pipe.kb
        await run_blocking(kb.rebuild)
        status = kb.status()
        self._index_updated(int(status.get("documents", 0)), int(status.get("chunks", 0)))

    async def reload(self) -> None:
        from daemon.service.reload import reload_config

        await reload_config(self)

    def _require_ready(self) -> None:
        if self.pipe is None:
            raise NotReadyError("the assistant is still starting; try again in a few seconds")


class NotReadyError(SottovoceError):
    code = "NotReady"


def _check_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise BadArgumentError("the text is empty")
    if len(text) > MAX_TEXT:
        raise BadArgumentError(f"the text is too long ({len(text)} characters; at most {MAX_TEXT})")
    return text


def spoken_part(chunks: list[TextChunk], played: Mapping[tuple[int, int], float], turn: int) -> str:
    """The reply text that was actually heard: whole chunks, then a share of a partial one."""
    words: list[str] = []
    for chunk in chunks:
        share = played.get((turn, chunk.index), 0.0)
        if share <= 0.0:
            break
        parts = chunk.text.split()
        words += parts if share >= 0.999 else parts[: int(len(parts) * share)]
        if share < 0.999:
            break
    return " ".join(words)


class _OutputSink:
    """Turn audio -> the speaker, tagged with the clause it came from."""

    def __init__(self, ctl: AssistantController, turn: int) -> None:
        self._ctl = ctl
        self._turn = turn

    def write(self, chunk: AudioChunk) -> None:
        if not self._ctl.scope.is_current(self._turn):
            return
        self._ctl.output.play(chunk.samples, chunk.sample_rate, (self._turn, chunk.chunk_index))
        self._ctl.audio_started(self._turn)
