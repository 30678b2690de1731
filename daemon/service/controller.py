"""The controller: the state machine, errors and commands (replies: its TurnKeeper).

States: starting -> listening -> hearing -> thinking -> speaking -> listening, plus paused
and error. Microphone frames arrive on the event loop (one bridge, in the devices layer);
inference runs in worker threads; barge-in goes through the one InterruptionScope.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from daemon import __version__
from daemon.config import Config
from daemon.errors import (
    BadArgumentError, NoDeviceError, NotReadyError, SottovoceError, UnknownEmotionError,
)
from daemon.interruption import InterruptionScope
from daemon.messages import (
    Emotion, ErrorEvent, IndexUpdatedEvent, PropertyChanged, ServiceEvent, StateChanged, TurnResult,
)
from daemon.pipeline import Pipeline
from daemon.service.events import EventHub
from daemon.service.hearing import Hearing
from daemon.service.turn_keeping import TurnKeeper
from daemon.service.turns import StageError, check_text, spoken_part
from daemon.stages.speech_text import has_words, to_speakable
from daemon.threads import run_blocking
from daemon.turn import speak_text

if TYPE_CHECKING:
    from daemon.audio.devices import AudioOutput
    from daemon.kb.index import KnowledgeBase

_LOGGER = logging.getLogger(__name__)
# Unexpected failures in a row after which the service gives up (systemd restarts it afresh).
MAX_FAILURES = 5
# Longest a reply stays silenced by speech that is neither over nor a barge-in yet.
HOLD_LIMIT_S = 1.0


class AssistantController:
    """Implements :class:`daemon.service.api.Controller` (and the :class:`TurnHost` its
    :class:`TurnKeeper` needs); replies are the keeper's."""

    def __init__(self, cfg: Config, output: AudioOutput, on_fatal: Callable[[BaseException], None]) -> None:
        self.cfg = cfg
        # What only a restart applies (the devices, the watchdog) stays as this one says.
        self.started_with = cfg
        self.config_path: str | None = None
        # Set by the service: loads the models and listens, as at start (for a reload after a failed one).
        self.loader: Callable[[], Awaitable[None]] | None = None
        self.scope = InterruptionScope()
        self.hub = EventHub()
        self.turns = TurnKeeper(self, output, self.scope, self.hub)
        self.hearing: Hearing | None = None
        self._on_fatal = on_fatal
        self._state = "starting"
        self._paused = False
        self._emotion = Emotion(cfg.emotion.default, cfg.emotion.intensity)
        self._device_errors: dict[str, str] = {}
        self._startup_problem = ""
        self._loading_kb: KnowledgeBase | None = None      # until attach(): the first indexing
        self._failures = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._hold_timer: asyncio.TimerHandle | None = None
        self.last_first_sound = 0.0

    @property
    def pipe(self) -> Pipeline | None:
        return self.turns.pipe

    @property
    def output(self) -> AudioOutput:
        return self.turns.output

    @output.setter
    def output(self, output: AudioOutput) -> None:
        self.turns.output = output

    # ------------------------------------------------------------ lifecycle
    def attach(self, pipe: Pipeline) -> None:
        """Models are loaded: start listening."""
        self.turns.pipe = pipe
        self.hearing = Hearing(self.cfg.vad, pipe, self)
        if pipe.kb is not None:
            self.watch_kb(pipe.kb)
        if len(pipe.history):           # remembered from before: warm up with it in the prompt
            self.spawn(self.turns.prime(pipe, self._emotion), "llm-prime")
        self.set_state(self.idle_state())

    def watch_kb(self, kb: KnowledgeBase) -> None:
        """Follow the knowledge-base folder; its updates and indexing progress are announced
        (IndexUpdated, the KnowledgeBase property) from the event loop."""
        loop = asyncio.get_running_loop()

        def on_update(documents: int, chunks: int) -> None:
            loop.call_soon_threadsafe(self._index_updated, documents, chunks)

        def on_progress() -> None:
            if not loop.is_closed():      # a last batch may end after the service has stopped
                loop.call_soon_threadsafe(self.hub.publish, PropertyChanged("KnowledgeBase"))

        kb.start_watching(on_update, on_progress)

    def _index_updated(self, documents: int, chunks: int) -> None:
        self.hub.publish(IndexUpdatedEvent(documents, chunks))
        self.hub.publish(PropertyChanged("KnowledgeBase"))

    async def close(self) -> None:
        """Stop every turn and background task, and the knowledge-base watcher."""
        self.scope.interrupt()
        for task in list(self._background):
            task.cancel()
        if self.hearing is not None:
            self.hearing.close()
        if self.pipe is not None and self.pipe.kb is not None:
            await asyncio.to_thread(self.pipe.kb.stop)

    def spawn(self, coro: Awaitable[Any], name: str) -> "asyncio.Task[Any]":
        """A background task held until it ends (unheld tasks may be garbage-collected)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

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
        return self.turns.last_transcript

    @property
    def last_reply(self) -> str:
        return self.turns.last_reply

    @property
    def last_timings(self) -> dict[str, float]:
        return self.turns.last_timings

    @property
    def version(self) -> str:
        return __version__

    def first_indexing_follower(self, on_progress: Callable[[], None]) -> Callable[[KnowledgeBase], None]:
        """For ``build_pipeline(on_kb=...)``, called on the event loop: while the models load
        and the knowledge base indexes its folder, the KnowledgeBase property shows the
        progress and ``on_progress()`` runs on the loop after each step."""
        loop = asyncio.get_running_loop()

        def progressed() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(on_progress)
                loop.call_soon_threadsafe(self.hub.publish, PropertyChanged("KnowledgeBase"))

        def on_kb(kb: KnowledgeBase) -> None:
            self._loading_kb = kb
            kb.follow_progress(progressed)

        return on_kb

    def knowledge_base_info(self) -> Mapping[str, Any]:
        """The index summary, with the folder the service indexes and its index folder: they
        follow ``sottovoced --kb``, which the CLI's own config does not know about. Before the
        knowledge base is set up (early in the start, or without an embedding model) the
        folder comes from the config and the index folder is not known yet ("")."""
        kb = self.pipe.kb if self.pipe else self._loading_kb
        if kb is None:
            folder = Path(self.cfg.rag.knowledge_base).expanduser().absolute()
            return {"documents": 0, "chunks": 0, "last_indexed": 0.0, "failed": {},
                    "folder": str(folder), "index_dir": ""}
        return kb.status()

    def models_info(self) -> Mapping[str, str]:
        c = self.cfg
        return {
            "vad": c.vad.model, "stt": c.stt.model, "llm": f"{c.llm.engine}:{c.llm.model}",
            "tts": f"{getattr(self.pipe.tts, 'name', c.tts.engine) if self.pipe else c.tts.engine}",
            "embeddings": c.rag.embedding_model, "profile": c.profile,
        }

    def problems(self) -> Mapping[str, str]:
        found = dict(self._device_errors)
        if self._startup_problem:
            found["startup"] = self._startup_problem
        return found

    def emotion_names(self) -> tuple[str, ...]:
        return tuple(self.cfg.emotion.styles)

    def subscribe(self, callback: Callable[[ServiceEvent], None]) -> Callable[[], None]:
        return self.hub.subscribe(callback)

    @property
    def busy(self) -> bool:
        """True from a question until its reply has left the speaker (or was interrupted)."""
        return self.turns.busy

    # ------------------------------------------------------------- state
    def set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        if self.hearing is not None:
            self.hearing.assistant_speaking(state in ("thinking", "speaking"))
        _LOGGER.info("state: %s", state)
        self.hub.publish(StateChanged(state))
        self.hub.publish(PropertyChanged("State"))

    def idle_state(self) -> str:
        if self._device_errors or self._startup_problem:
            return "error"
        return "paused" if self._paused else "listening"

    def report_error(self, code: str, message: str) -> None:
        _LOGGER.error("%s: %s", code, message)
        self.hub.publish(ErrorEvent(code, message))

    def startup_failed(self, code: str, message: str) -> None:
        """The models could not be loaded: say why and stay in 'error' (D-Bus still answers)."""
        self._startup_problem = f"{code}: {message}"
        self.report_error(code, message)
        self.hub.publish(PropertyChanged("Problems"))
        self.set_state("error")

    @property
    def start_failed(self) -> bool:
        """The models could not be loaded at start (nor since): nothing listens."""
        return bool(self._startup_problem) and self.pipe is None

    def starting_again(self) -> None:
        """A reload after a failed start loads the models again: 'starting' meanwhile."""
        self._startup_problem = ""
        self.hub.publish(PropertyChanged("Problems"))
        self.set_state("starting")

    def stage_failed(self, code: str, message: str, exc: BaseException | None = None) -> None:
        """A stage failed on one utterance: report it, keep listening; give up after a run."""
        self.report_error(code, message)
        if exc is None or isinstance(exc, SottovoceError):
            return
        self._failures += 1
        if self._failures >= MAX_FAILURES:
            self._on_fatal(exc)

    def reply_succeeded(self) -> None:
        """A reply ran to its end: failures are no longer in a row."""
        self._failures = 0

    def device_error(self, role: str, message: str) -> None:
        """The microphone or speaker is missing; the devices layer keeps reconnecting."""
        self._device_errors[role] = message
        self.report_error("Device", message)
        self.hub.publish(PropertyChanged("Problems"))
        if not self.busy:
            self.set_state("error")

    def first_sound(self, t: float) -> None:
        """The speaker emitted the first sample of a reply (for latency measurement)."""
        self.last_first_sound = t

    def device_recovered(self, role: str, message: str = "") -> None:
        if self._device_errors.pop(role, None) is not None:
            _LOGGER.info("%s", message or f"{role} back")
            self.hub.publish(PropertyChanged("Problems"))
        if role == "microphone" and self.hearing is not None:
            self.hearing.reset()       # whatever was half-heard before the loss is gone
        if not self.busy and self._state == "error":
            self.set_state(self.idle_state())

    # ------------------------------------------------------------ hearing
    def speech_started(self) -> None:
        if not self.busy and self._state in ("listening", "error"):
            self.set_state("hearing")

    def speech_dropped(self) -> None:
        if self._state == "hearing":
            self.set_state(self.idle_state())

    def hold_output(self, on: bool) -> None:
        """User speech over the reply, not yet long enough to be a barge-in: silence the
        speaker now (on), or let the reply go on (off) when it stopped short."""
        self.cancel_hold_timer()
        if on and not self.busy:
            return
        _LOGGER.info("playback %s", "held: speech over the reply" if on else "resumed: too short to interrupt")
        self.output.hold(on)
        if on:   # the microphone may go quiet for good (unplugged, paused): never hold for ever
            self._hold_timer = asyncio.get_running_loop().call_later(HOLD_LIMIT_S, self.hold_output, False)

    def cancel_hold_timer(self) -> None:
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def barge_in(self) -> None:
        self.cancel_hold_timer()
        if self.busy:
            _LOGGER.info("barge-in")
            self.turns.interrupt()
            self.set_state("hearing")

    def heard(self, text: str, speech_end: float, stt_s: float) -> None:
        """A complete utterance was transcribed: answer it."""
        if not text:
            self.speech_dropped()
            return
        self.turns.start(text, speech_end, stt_s)

    # ----------------------------------------------------------- commands
    async def pause(self) -> None:
        self._set_paused(True)

    async def resume(self) -> None:
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if self.hearing is not None:
            self.hearing.reset()
        self.hub.publish(PropertyChanged("Paused"))
        if not self.busy and self._state != "starting":    # still loading: it stays 'starting'
            self.set_state(self.idle_state())

    async def interrupt(self) -> None:
        if self.busy:
            self.turns.interrupt()
            self.set_state(self.idle_state())

    async def set_emotion(self, name: str, intensity: float) -> None:
        if name not in self.cfg.emotion.styles:
            raise UnknownEmotionError(
                f"unknown emotion {name!r}; choose one of: {', '.join(self.cfg.emotion.styles)}")
        if not 0.0 <= intensity <= 1.0:
            raise BadArgumentError(f"intensity {intensity} is out of range: give a value from 0 to 1")
        self._emotion = Emotion(name, float(intensity))
        self.hub.publish(PropertyChanged("Emotion"))

    async def ask(self, text: str) -> TurnResult:
        """Answer typed text out loud; returns once the reply text is complete."""
        text = check_text(text, "question")
        self._ready_pipe()
        active = self.turns.start(text, time.monotonic(), 0.0)
        return await asyncio.shield(active.text_done)

    async def say(self, text: str) -> None:
        """Speak ``text`` as given; returns once it is synthesized (speech may go on)."""
        text = check_text(text)
        if not has_words(to_speakable(text)):   # emoji, punctuation: nothing to read aloud
            raise BadArgumentError("nothing to say: the text has no words to speak")
        pipe = self._ready_pipe()
        if "speaker" in self._device_errors:
            raise NoDeviceError(f"nothing was said: {self._device_errors['speaker']}")
        active = self.turns.begin("")

        async def work() -> TurnResult:
            await speak_text(pipe, text, active.turn, self.scope.stopper(active.turn),
                             self._emotion, self.turns.sink(active), active.chunks.append)
            return TurnResult(transcript="", reply=text, sources=(), timings={})

        self.turns.launch(active, work, False, "say")
        await asyncio.shield(active.text_done)

    async def reindex(self) -> None:
        kb = self._ready_pipe().kb
        if kb is None:
            raise SottovoceError("the knowledge base is not available; check rag.knowledge_base")
        await run_blocking(kb.rebuild)
        status = kb.status()
        self._index_updated(int(status.get("documents", 0)), int(status.get("chunks", 0)))

    async def reload(self) -> None:
        from daemon.service.reload import reload_config

        await reload_config(self)

    def _ready_pipe(self) -> Pipeline:
        """The pipeline; NotReady while the models are still loading, or after they failed to."""
        if self.start_failed:
            raise NotReadyError(f"the assistant could not start ({self._startup_problem}); "
                                "fix the config, then Reload (sottovoce reload)")
        if self.pipe is None:
            raise NotReadyError("the assistant is still starting; try again in a few seconds")
        return self.pipe


__all__ = ["AssistantController", "NotReadyError", "StageError", "spoken_part"]
