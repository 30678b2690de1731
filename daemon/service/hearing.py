"""Microphone frames -> endpointing -> (speculative) transcription -> the controller.

The VAD runs on its own single worker thread (frames stay in order); transcription runs
in the inference pool. Transcription starts speculatively when silence begins and its
result is thrown away if the user goes on talking.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.audio.mic import is_digital_silence
from daemon.config import VadConfig
from daemon.threads import run_blocking

if TYPE_CHECKING:
    from daemon.pipeline import Pipeline
    from daemon.service.controller import AssistantController

_LOGGER = logging.getLogger(__name__)
FRAME = 512
FRAME_MS = FRAME * 1000 / 16000
# Digitally silent frames (``is_digital_silence``) count as silence without asking the model:
# a muted or idle microphone then costs no inference.
# Silence after a short burst that lets a held reply go on (a gap inside a word is shorter).
RELEASE_AFTER_MS = 96
# A frame after the speculative pause louder than this share of the speech's loudest frame
# (-26 dB) means the speculation may have missed a word.
TAIL_SOUND = 0.05


class GatedVad:
    """A speech detector that skips the model on digitally silent frames (probability 0)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.frame_samples: int = model.frame_samples
        self._quiet = False

    def probability(self, frame: np.ndarray) -> float:
        if is_digital_silence(frame):
            if not self._quiet:
                self._model.reset()     # what the model's state would decay to in silence
                self._quiet = True
            return 0.0
        self._quiet = False
        return float(self._model.probability(frame))

    def reset(self) -> None:
        self._model.reset()
        self._quiet = False


class Hearing:
    """The listening half of the service: endpointing, speculative STT and barge-in."""

    def __init__(self, cfg: VadConfig, pipe: "Pipeline", ctl: "AssistantController") -> None:
        from daemon.stages.vad import Endpointer

        self.cfg = cfg
        self.pipe = pipe
        self.ctl = ctl
        self.endpointer = Endpointer(GatedVad(pipe.vad_model), cfg)
        self._vad_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vad")
        # To the nearest frame: 200 ms -> 6 frames (192 ms); ceil would demand 224 ms.
        self._barge_frames = max(1, round(cfg.barge_in_ms / FRAME_MS))
        # Speech this long silences the reply at once, before it is known to be a barge-in.
        self._hold_frames = round(cfg.barge_in_hold_ms / FRAME_MS) if cfg.barge_in_hold_ms else 0
        self._voiced_run = 0
        self._silent_run = 0
        self._holding = False
        self._recent: collections.deque[np.ndarray] = collections.deque(
            maxlen=math.ceil(30_000 / FRAME_MS))
        self._since_start = 0
        self._spec: asyncio.Task[tuple[str, float]] | None = None
        self._spec_dropped = threading.Event()
        self._spec_level = 0.0        # loudest frame (RMS) of the audio the speculation heard
        self._tail_level = 0.0        # loudest frame since: sound the VAD did not call speech
        self._generation = 0          # bumps on reset: stale VAD results are ignored
        self._in_flight = 0           # jobs queued on the VAD thread (loop-side count)

    @property
    def idle(self) -> bool:
        """Nothing is being heard, answered or transcribed: frames of digital silence may
        arrive late (the microphone batches them)."""
        if self.ctl.paused:
            return True
        return not (self.ctl.busy or self.endpointer.in_speech or self._in_flight or self._spec is not None)

    # ------------------------------------------------------------ controls
    def assistant_speaking(self, speaking: bool) -> None:
        self.endpointer.set_assistant_speaking(speaking)
        self._voiced_run = 0
        self._release()

    def reset(self) -> None:
        self._generation += 1
        self._cancel_spec()
        self._on_vad_thread(self.endpointer.reset, lambda _f: None)
        self._voiced_run = self._since_start = 0

    def close(self) -> None:
        self._generation += 1           # frames still on the VAD thread are ignored
        self._cancel_spec()
        self._vad_thread.shutdown(wait=False, cancel_futures=True)

    # --------------------------------------------------------------- frames
    def on_frame(self, frame: np.ndarray, t: float) -> None:
        """Called on the event loop for every 32 ms frame from the microphone."""
        if self.ctl.paused or self.ctl.pipe is None:
            return   # paused: dropped before the VAD, nothing heard or kept
        generation = self._generation
        if self._in_flight == 0 and is_digital_silence(frame):
            # Nothing queued on the VAD thread, so order is kept; a silent frame needs no
            # model call, and skipping two thread hops keeps an idle service cheap.
            self._after_vad(self._vad(frame), frame, generation)
            return
        self._on_vad_thread(lambda: self._vad(frame),
                            lambda f: self._vad_done(f, frame, generation))

    def _on_vad_thread(self, fn: Any, then: Any) -> None:
        """Run ``fn`` on the VAD thread (in order), then ``then(future)`` on the loop."""
        self._in_flight += 1
        future = asyncio.get_running_loop().run_in_executor(self._vad_thread, fn)

        def done(f: "asyncio.Future[Any]") -> None:
            self._in_flight -= 1
            then(f)

        future.add_done_callback(done)

    def _vad(self, frame: np.ndarray) -> tuple[list[Any], float, float]:
        events = self.endpointer.feed(frame)
        return events, self.endpointer.last_probability, self.endpointer.threshold

    def _vad_done(self, future: "asyncio.Future[Any]", frame: np.ndarray, generation: int) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.ctl.stage_failed("VAD", f"voice detection failed: {exc}", exc)
            return
        self._after_vad(future.result(), frame, generation)

    def _after_vad(self, result: tuple[list[Any], float, float], frame: np.ndarray,
                   generation: int) -> None:
        if generation != self._generation or self.ctl.paused:
            return
        events, prob, threshold = result
        self._recent.append(frame)
        self._since_start += 1
        if self._spec is not None:
            self._tail_level = max(self._tail_level, _rms(frame))
        self._check_barge_in(prob >= threshold)
        for event in events:
            self._handle(event)

    def _check_barge_in(self, voiced: bool) -> None:
        """Count voiced frames while the assistant talks: a short run silences the reply
        (held), a run of ``barge_in_ms`` interrupts it, a gap before that lets it go on."""
        if not self.ctl.busy:
            self._voiced_run = 0
            self._release()
            return
        if voiced:
            self._voiced_run += 1
            self._silent_run = 0
        else:
            self._silent_run += 1
            if self._silent_run * FRAME_MS >= RELEASE_AFTER_MS:
                self._release()            # a cough or a click: the reply goes on
            if self._silent_run * FRAME_MS >= 160:   # a gap: the burst is over
                self._voiced_run = 0
        if self._voiced_run >= self._barge_frames:
            self._voiced_run = 0
            self._holding = False          # the interruption drops the held audio
            self.ctl.barge_in()
        elif self._hold_frames and self._voiced_run >= self._hold_frames and not self._holding:
            self._holding = True
            self.ctl.hold_output(True)

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self.ctl.hold_output(False)

    def _handle(self, event: Any) -> None:
        kind = event.kind
        if kind == "start":
            self._since_start = math.ceil(self.cfg.min_speech_ms / FRAME_MS)
            self._cancel_spec()
            self.ctl.speech_started()
        elif kind == "pause" and not self.ctl.busy:
            self._start_spec(event.ended_at)   # while the assistant talks, only a barge-in counts
        elif kind == "resume":
            self._cancel_spec()
        elif kind == "end":
            self.ctl.spawn(self._utterance(event), "utterance")

    # ------------------------------------------------------ transcription
    def _start_spec(self, ended_at: float) -> None:
        self._cancel_spec()
        frames = list(self._recent)[-(self._since_start + math.ceil(self.cfg.preroll_ms / FRAME_MS)):]
        if frames:
            audio = np.concatenate(frames)
            dropped = threading.Event()
            self._spec = asyncio.create_task(self._speculate(audio, dropped, ended_at), name="stt-speculative")
            self._spec_dropped = dropped
            self._spec_level = max(_rms(f) for f in frames)
            self._tail_level = 0.0

    async def _speculate(self, audio: np.ndarray, dropped: threading.Event,
                         ended_at: float) -> tuple[str, float]:
        """Transcribe what was said before the pause; with ``speculative_reply``, also start
        answering it, held back until the end of the utterance is confirmed."""
        text, stt_s = await self._transcribe(audio, dropped)
        if text and self.cfg.speculative_reply and not dropped.is_set():
            self.ctl.turns.prepare(text, ended_at, stt_s)
        return text, stt_s

    def _cancel_spec(self) -> None:
        if self._spec is not None and not self._spec.done():
            self._spec.cancel()
            self._spec_dropped.set()     # the thread goes on, but skips its second pass
        self._spec = None
        self.ctl.turns.drop_prepared()   # a reply started on it is dropped unheard

    async def _transcribe(self, audio: np.ndarray,
                          dropped: threading.Event | None = None) -> tuple[str, float]:
        pipe = self.pipe

        def hints(first: str) -> str | None:
            return None if dropped is not None and dropped.is_set() else pipe.hotwords(first)

        start = time.monotonic()
        text, _ = await run_blocking(lambda: pipe.stt.transcribe(audio, hints=hints))
        return text.strip(), time.monotonic() - start

    async def _utterance(self, event: Any) -> None:
        if self.ctl.busy:
            self._cancel_spec()   # speech too short to barge in while the assistant talks
            return
        if self._spec is not None and self._tail_level > TAIL_SOUND * self._spec_level:
            # Sound after the pause the VAD did not count as speech (a soft "flash" after
            # "light"): what was transcribed at the pause may miss it; hear it all again.
            _LOGGER.debug("sound after the pause: transcribing the whole utterance")
            self._cancel_spec()
        spec, self._spec = self._spec, None
        try:
            if spec is not None:
                text, stt_s = await spec
            else:
                text, stt_s = await self._transcribe(event.audio)
        except asyncio.CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - one bad utterance must not stop listening
            _LOGGER.exception("transcription failed")
            self.ctl.stage_failed("STT", f"speech recognition failed: {exc}; still listening", exc)
            self.ctl.speech_dropped()
            return
        if self.ctl.paused:
            return
        _LOGGER.info("utterance: %d ms of speech, %s transcript in %.3f s, %.3f s after it ended",
                     event.speech_ms, "speculative" if spec is not None else "final", stt_s,
                     time.monotonic() - event.ended_at)
        if not self.ctl.turns.commit_prepared():   # the reply started at the pause goes on, heard now
            self.ctl.heard(text, event.ended_at, stt_s)


def _rms(frame: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
