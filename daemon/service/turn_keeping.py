"""The turn keeper: starting, announcing, running and ending replies.

A turn lasts from the question until its last sample has left the speaker (or it was
interrupted). Replies begun early (at a pause in the question) are held back, unheard and
unannounced, until the end of the question confirms them. :class:`TurnKeeper` is owned by
:class:`daemon.service.controller.AssistantController` and reaches it only through
:class:`TurnHost`; interruption goes through the one ``InterruptionScope``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Hashable, Mapping, Protocol

from daemon.errors import SottovoceError
from daemon.interruption import InterruptionScope
from daemon.messages import (
    Emotion, InterruptedEvent, PropertyChanged, ReplyEvent, TranscriptEvent, TurnResult,
)
from daemon.service.events import EventHub
from daemon.service.turns import ActiveTurn, OutputSink, StageError, spoken_part
from daemon.threads import run_blocking
from daemon.turn import TurnRequest, run_turn

if TYPE_CHECKING:
    from daemon.audio.devices import AudioOutput
    from daemon.pipeline import Pipeline

_LOGGER = logging.getLogger("daemon.service.controller")
# How much longer than the reply's own length playback may take before we stop waiting.
PLAYOUT_SLACK_S = 5.0


class TurnHost(Protocol):
    """What the turn keeper needs from the controller that owns it."""

    @property
    def state(self) -> str: ...
    @property
    def paused(self) -> bool: ...
    @property
    def emotion(self) -> Emotion: ...
    def set_state(self, state: str) -> None: ...
    def idle_state(self) -> str: ...
    def cancel_hold_timer(self) -> None: ...
    def stage_failed(self, code: str, message: str, exc: BaseException | None = None) -> None: ...
    def reply_succeeded(self) -> None: ...
    def spawn(self, coro: Awaitable[Any], name: str) -> "asyncio.Task[Any]": ...


class TurnKeeper:
    """Turn lifecycle for the controller (see the module docstring)."""

    def __init__(self, host: TurnHost, output: "AudioOutput", scope: InterruptionScope,
                 hub: EventHub) -> None:
        self.host = host
        self.output = output
        self.scope = scope
        self.hub = hub
        self.pipe: Pipeline | None = None
        self.last_transcript = ""
        self.last_reply = ""
        self.last_timings: dict[str, float] = {}
        self._active: ActiveTurn | None = None
        self._prepared: ActiveTurn | None = None     # a reply begun before the question ended
        self._last_played: Mapping[Hashable, float] = {}
        scope.add_hook(self._stop_output)

    @property
    def busy(self) -> bool:
        """True from a question until its reply has left the speaker (or was interrupted)."""
        return self._active is not None and self._active.running

    # -------------------------------------------------------------- turns
    def begin(self, question: str) -> ActiveTurn:
        """A new current turn, announced (an empty question: speech the user asked for)."""
        assert self.pipe is not None
        self.drop_prepared()
        if self.busy:
            self.interrupt()
        active = ActiveTurn(self.scope.begin_turn(), question)
        self._go_live(active)
        return active

    def _go_live(self, active: ActiveTurn) -> None:
        self._active = active
        self.output.hold(False)         # a reply that is announced is heard
        if active.question:
            self.last_transcript = active.question
            self.last_reply = ""            # the previous one does not answer this question
            self.hub.publish(TranscriptEvent(active.question))
            self.hub.publish(PropertyChanged("LastTranscript"))
            self.hub.publish(PropertyChanged("LastReply"))
        self.host.set_state("thinking")

    # ------------------------------------------------- replies begun early
    def prepare(self, question: str, speech_end: float, stt_s: float) -> None:
        """Start answering what was heard before a pause, unheard and unannounced: the
        speaker holds its audio until :meth:`commit_prepared` (the pause was the end of the
        question) or :meth:`drop_prepared` (the user went on talking)."""
        if self.busy or self.host.paused or self.pipe is None:
            return
        self.drop_prepared()
        self.host.cancel_hold_timer()
        active = ActiveTurn(self.scope.begin_turn(), question)
        active.confirmed = asyncio.get_running_loop().create_future()
        self._prepared = active
        self.output.hold(True)
        self._run_turn(active, speech_end, stt_s)

    def commit_prepared(self) -> bool:
        """The question did end at the pause: announce the reply begun then and let it play."""
        active, self._prepared = self._prepared, None
        if active is None or active.confirmed is None or not self.scope.is_current(active.turn):
            if active is not None:
                _LOGGER.warning("early reply %d was overtaken; answering afresh", active.turn)
                self.output.hold(False)
            return False
        self._go_live(active)
        if active.audio_s > 0:
            self.host.set_state("speaking")
        active.confirmed.set_result(None)
        return True

    def drop_prepared(self) -> None:
        active, self._prepared = self._prepared, None
        if active is None:
            return
        if self.scope.is_current(active.turn):
            _LOGGER.info("early reply dropped: the question went on")
            self.scope.interrupt()          # cancels it and drops its held audio, unheard
        self.output.hold(False)

    def launch(self, active: ActiveTurn, work: Callable[[], Awaitable[TurnResult]],
               remember: bool, name: str) -> None:
        """Run ``work`` as this turn's task (cancelled with the turn)."""
        task = asyncio.create_task(self._reply(active, work, remember), name=f"{name}-{active.turn}")
        active.task = task
        self.scope.track(task)  # type: ignore[arg-type]

    def sink(self, active: ActiveTurn) -> OutputSink:
        """Where this turn's audio goes: the speaker, while the turn is current."""
        return OutputSink(self.output, active, lambda: self.scope.is_current(active.turn),
                          lambda: self.audio_started(active.turn))

    def start(self, question: str, speech_end: float, stt_s: float) -> ActiveTurn:
        """Answer ``question`` now, interrupting any turn still running."""
        active = self.begin(question)
        self._run_turn(active, speech_end, stt_s)
        return active

    def _run_turn(self, active: ActiveTurn, speech_end: float, stt_s: float) -> None:
        question = active.question
        req = TurnRequest(question=question, turn=active.turn,
                          should_stop=self.scope.stopper(active.turn), emotion=self.host.emotion,
                          speech_end=speech_end, stt_s=stt_s, on_chunk=active.chunks.append)
        pipe = self.pipe
        assert pipe is not None
        self.launch(active, lambda: run_turn(pipe, req, self.sink(active)), True, "turn")

    async def _reply(self, active: ActiveTurn, work: Callable[[], Awaitable[TurnResult]],
                     remember: bool) -> None:
        """Run one reply to its end: text, then the speaker playing it out, then history."""
        try:
            result = await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed reply must not stop the service
            if active.confirmed is not None:
                await active.confirmed      # a reply begun early fails when it is asked for
            self._turn_failed(active, exc)
            return
        if active.confirmed is not None:
            await active.confirmed          # cancelled with the turn if it is dropped
        self.host.reply_succeeded()
        if not self.scope.is_current(active.turn):
            return
        if result.timings:
            self.last_timings = dict(result.timings)
            self.hub.publish(PropertyChanged("LastTimings"))
            _LOGGER.info("turn %d timings: %s", active.turn,
                         ", ".join(f"{k} {v:.3f}" for k, v in result.timings.items()))
        if remember:
            self.last_reply = result.reply
            self.hub.publish(ReplyEvent(result.reply, tuple(result.sources)))
            self.hub.publish(PropertyChanged("LastReply"))
        active.reply_ready(result)
        heard = await self._played_out(active)
        if self.scope.is_current(active.turn):
            if heard is not None:           # no speaker, or lost part way: only that was heard
                self._cut_short(active, heard)
            elif remember:
                self._remember(active.question, result.reply)
            self._active = None
            self.host.set_state(self.host.idle_state())

    async def _played_out(self, active: ActiveTurn) -> str | None:
        """Until the speaker has played the reply; bounded, so a stuck device cannot hang us.
        None when it was played out; the part that was heard when the speaker was lost on the
        way ("" when there was no speaker: nothing was heard)."""
        limit = active.audio_s + PLAYOUT_SLACK_S
        if not getattr(self.output, "connected", True):
            self.host.stage_failed("Device", f"the reply ({active.audio_s:.1f} s) was not spoken: "
                                             "there is no speaker; check the output device")
            return ""
        try:
            await asyncio.wait_for(self.output.wait_done(), limit)
            if not getattr(self.output, "connected", True):
                heard = spoken_part(active.chunks, self.output.stop_now(), active.turn)
                _LOGGER.warning("turn %d: the speaker was lost during the reply; heard: %r", active.turn, heard)
                self.host.stage_failed("Device", "the speaker was lost during the reply: it was cut short "
                                                 f"after {len(heard.split())} words; check the output device")
                return heard
            _LOGGER.info("turn %d: %.2f s of reply audio played", active.turn, active.audio_s)
        except asyncio.TimeoutError:
            describe = getattr(self.output, "describe", lambda: "")
            _LOGGER.warning("speaker state: %s", describe())
            # Said, not only logged: the user heard (part of) nothing and should know why.
            self.host.stage_failed("Device", f"the speaker did not play {active.audio_s:.1f} s of reply out "
                                             f"within {limit:.1f} s; check the output device; still listening")
        return None

    def _turn_failed(self, active: ActiveTurn, exc: Exception) -> None:
        if isinstance(exc, SottovoceError):
            error: SottovoceError = exc
        else:
            _LOGGER.error("turn %d failed", active.turn, exc_info=exc)
            error = StageError(f"the reply failed ({type(exc).__name__}: {exc}); still listening")
        active.failed(error)
        self.host.stage_failed(error.code, str(error), exc)
        if self.scope.is_current(active.turn):
            self.scope.interrupt()          # drop whatever part of the reply was queued
            self._active = None
            self.host.set_state(self.host.idle_state())

    def _remember(self, question: str, reply: str) -> None:
        """Into the history; then warm the LLM's cache for the next question, off the loop."""
        pipe = self.pipe
        if pipe is None:
            return
        pipe.history.add(question, reply)
        self.host.spawn(self.prime(pipe, self.host.emotion), "llm-prime")

    @staticmethod
    async def prime(pipe: Pipeline, emotion: Emotion) -> None:
        try:
            await run_blocking(pipe.prime, emotion)
        except Exception:  # noqa: BLE001 - only a warm-up; the next turn reports real failures
            _LOGGER.warning("could not prepare the LLM for the next question", exc_info=True)

    def audio_started(self, turn: int) -> None:
        if self.scope.is_current(turn) and self.host.state == "thinking":
            self.host.set_state("speaking")

    def _stop_output(self) -> None:
        self._last_played = self.output.stop_now()

    def interrupt(self) -> str:
        """Cancel the running turn; history keeps only what was actually played."""
        active, self._active = self._active, None
        self.scope.interrupt()
        if active is None:
            return ""
        spoken = spoken_part(active.chunks, self._last_played, active.turn)
        self._cut_short(active, spoken)
        return spoken

    def _cut_short(self, active: ActiveTurn, spoken: str) -> None:
        """A reply that stopped part way (barge-in, Interrupt, the speaker lost): the history,
        LastReply and the Interrupted signal have only what was heard of it."""
        if active.question:
            self._remember(active.question, spoken)
            self.last_reply = spoken        # what was heard of it, as the history keeps it
            self.hub.publish(PropertyChanged("LastReply"))
        active.interrupted(spoken)
        self.hub.publish(InterruptedEvent(spoken))
