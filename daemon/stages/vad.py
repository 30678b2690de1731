"""Voice activity: Silero VAD on raw onnxruntime, and the endpointer that cuts utterances.

:class:`SileroVad` gives a speech probability per 32 ms frame (512 samples at 16 kHz).
:class:`Endpointer` turns those probabilities into events: speech started, paused (silence
began, a speculative transcription may start), resumed, and ended (the utterance's audio,
pre-roll included so first words survive). The service stamps them into messages.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from daemon.config import VadConfig
from daemon.errors import ModelError
from daemon.stages.base import SpeechDetector

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512                 # 32 ms: the only frame size Silero v5+ accepts at 16 kHz
FRAME_MS = FRAME_SAMPLES * 1000 / SAMPLE_RATE
_CONTEXT = 64                       # samples of the previous frame the model sees first
_HYSTERESIS = 0.15                  # speech ends below threshold - this (Silero's own rule)


class SileroVad:
    """Silero VAD (ONNX) without torch; one stream of frames at a time."""

    frame_samples: int = FRAME_SAMPLES

    def __init__(self, model_path: Path) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        # One thread: the frames are tiny, and the other cores belong to STT and the LLM.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelError(
                f"VAD model: cannot load {model_path} ({str(exc).splitlines()[0]}); "
                "reinstall it with `pip install --no-deps silero-vad==6.2.3`"
            ) from None
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._state, self._context = self._fresh()

    @staticmethod
    def _fresh() -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((2, 1, 128), np.float32), np.zeros(_CONTEXT, np.float32)

    def reset(self) -> None:
        """Forget the stream so far (call between unrelated streams)."""
        self._state, self._context = self._fresh()

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one 512-sample, 16 kHz float32 frame of the current stream."""
        prob, self._state, self._context = self._step(frame, self._state, self._context)
        return prob

    def _step(
        self, frame: np.ndarray, state: np.ndarray, context: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        frame = np.asarray(frame, dtype=np.float32).reshape(-1)
        if frame.size != FRAME_SAMPLES:
            raise ValueError(f"Silero VAD needs {FRAME_SAMPLES}-sample frames, got {frame.size}")
        x = np.concatenate([context, frame])[None, :]
        out, new_state = self._session.run(None, {"input": x, "state": state, "sr": self._sr})
        return float(out[0, 0]), new_state, frame[-_CONTEXT:].copy()

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Per-frame probabilities of a whole clip, on a private state (the stream is untouched)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = int(math.ceil(audio.size / FRAME_SAMPLES))
        padded = np.zeros(n * FRAME_SAMPLES, np.float32)
        padded[: audio.size] = audio
        state, context = self._fresh()
        probs = np.empty(n, np.float32)
        for i in range(n):
            probs[i], state, context = self._step(
                padded[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES], state, context
            )
        return probs

    def find_speech(
        self, audio: np.ndarray, *, threshold: float = 0.5, min_speech_ms: int = 100
    ) -> tuple[float, float] | None:
        """(start_s, end_s) of the speech in a whole clip; see :func:`find_speech`."""
        return find_speech(self, audio, threshold=threshold, min_speech_ms=min_speech_ms)


def load_silero(cfg: VadConfig) -> SileroVad:
    """The configured Silero model (``package:silero-vad`` or a path to the .onnx)."""
    from daemon.models import resolve_model

    return SileroVad(resolve_model(cfg.model, "VAD model"))


def find_speech(
    vad: SpeechDetector, audio: np.ndarray, *, threshold: float = 0.5, min_speech_ms: int = 100
) -> tuple[float, float] | None:
    """Where speech lies in a whole 16 kHz clip: (first voiced frame start, last voiced frame end).

    ``end_s`` is the moment the last voiced frame has been read: the "speech ended" instant
    of a file. None when fewer than ``min_speech_ms`` of frames reach ``threshold``.
    """
    probs_fn: Callable[[np.ndarray], np.ndarray] | None = getattr(vad, "probabilities", None)
    if probs_fn is not None:
        probs = probs_fn(audio)
    else:
        probs = _stream_probabilities(vad, audio)
    voiced = np.flatnonzero(probs >= threshold)
    frame_ms = vad.frame_samples * 1000 / SAMPLE_RATE
    if voiced.size * frame_ms < max(min_speech_ms, frame_ms):
        return None
    frame_s = vad.frame_samples / SAMPLE_RATE
    end_s = min((voiced[-1] + 1) * frame_s, len(audio) / SAMPLE_RATE)
    return float(voiced[0] * frame_s), float(end_s)


def speech_clip(audio: np.ndarray, span: tuple[float, float], margin_s: float = 0.3) -> np.ndarray:
    """The part of a whole 16 kHz clip that ``span`` (from :func:`find_speech`) marks as
    speech, with ``margin_s`` of what surrounds it on each side (as a file is transcribed)."""
    start_s, end_s = span
    return audio[max(0, int((start_s - margin_s) * SAMPLE_RATE)): int((end_s + margin_s) * SAMPLE_RATE)]


def _stream_probabilities(vad: SpeechDetector, audio: np.ndarray) -> np.ndarray:
    vad.reset()
    step = vad.frame_samples
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    frames = [audio[i:i + step] for i in range(0, audio.size, step)]
    probs = np.array([vad.probability(np.pad(f, (0, step - f.size))) for f in frames], np.float32)
    vad.reset()
    return probs


# ------------------------------------------------------------------ endpointing
EventKind = Literal["start", "pause", "resume", "end"]


@dataclass(frozen=True)
class VadEvent:
    """What the endpointer noticed. ``at`` is the clock time of the frame that caused it.

    ``end`` events carry the utterance (16 kHz float32, pre-roll included), how much of it
    was voiced, and ``ended_at``: the clock time when its last voiced frame was read
    (``pause`` events carry ``ended_at`` too).
    """

    kind: EventKind
    at: float
    audio: np.ndarray | None = field(default=None, repr=False)
    speech_ms: int = 0
    ended_at: float = 0.0


class Endpointer:
    """Cuts a live 16 kHz stream into utterances, frame by frame (one feeding thread).

    Speech "starts" once ``min_speech_ms`` of voiced frames have come in (shorter bursts
    are dropped without an event); it "pauses" after ``pause_ms`` of silence, "resumes"
    if speech returns, and "ends" after ``end_silence_ms`` of silence.
    """

    def __init__(
        self,
        vad: SpeechDetector,
        cfg: VadConfig,
        *,
        pause_ms: int | None = None,
        max_utterance_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vad = vad
        self._cfg = cfg
        self._clock = clock
        self._frame = vad.frame_samples
        frame_ms = self._frame * 1000 / SAMPLE_RATE
        self._frames_for = lambda ms: max(1, int(math.ceil(ms / frame_ms)))
        self._preroll_frames = self._frames_for(cfg.preroll_ms)
        self._min_speech_frames = self._frames_for(cfg.min_speech_ms) if cfg.min_speech_ms else 1
        self._end_frames = self._frames_for(cfg.end_silence_ms)
        self._pause_frames = self._frames_for(
            pause_ms if pause_ms is not None else cfg.pause_ms
        )
        self._pause_frames = min(self._pause_frames, self._end_frames)
        self._tail_frames = min(self._end_frames, self._frames_for(250))   # silence kept after speech
        self._max_frames = self._frames_for(max_utterance_s * 1000)
        self._lock = threading.Lock()
        self._threshold = cfg.threshold
        self.last_probability = 0.0
        self.reset()

    # -------------------------------------------------------------- controls
    def set_assistant_speaking(self, speaking: bool) -> None:
        """Use the stricter ``speaking_threshold`` while the assistant's own voice may leak in."""
        with self._lock:
            self._threshold = self._cfg.speaking_threshold if speaking else self._cfg.threshold

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def in_speech(self) -> bool:
        """True between a "start" event and its "end"."""
        return self._started

    def reset(self) -> None:
        """Drop any partial utterance and the detector's stream state."""
        self._vad.reset()
        self._pending = np.zeros(0, np.float32)
        self._preroll: collections.deque[np.ndarray] = collections.deque(maxlen=self._preroll_frames)
        self._frames: list[np.ndarray] = []     # the utterance so far (pre-roll first)
        self._active = False                    # a candidate or confirmed utterance is open
        self._started = False                   # "start" was announced
        self._paused = False
        self._voiced = 0
        self._silence = 0
        self._last_voiced_index = 0
        self._last_voiced_at = 0.0

    # --------------------------------------------------------------- feeding
    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Feed 16 kHz float32 samples (any length); returns the events they caused."""
        data = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._pending.size:
            data = np.concatenate([self._pending, data])
        events: list[VadEvent] = []
        whole = data.size - data.size % self._frame
        for i in range(0, whole, self._frame):
            events.extend(self._feed_frame(data[i:i + self._frame]))
        self._pending = data[whole:].copy()
        return events

    def _feed_frame(self, frame: np.ndarray) -> list[VadEvent]:
        now = self._clock()
        prob = self._vad.probability(frame)
        self.last_probability = prob
        with self._lock:
            threshold = self._threshold
        if not self._active:
            if prob < threshold:
                self._preroll.append(frame)
                return []
            self._open()
        self._frames.append(frame)
        if prob >= threshold or (prob >= threshold - _HYSTERESIS and self._silence == 0):
            return self._on_voiced(now)
        return self._on_silent(now)

    def _open(self) -> None:
        self._active = True
        self._frames = list(self._preroll)
        self._preroll.clear()
        self._voiced = self._silence = 0

    def _on_voiced(self, now: float) -> list[VadEvent]:
        events: list[VadEvent] = []
        self._voiced += 1
        self._silence = 0
        self._last_voiced_index = len(self._frames)
        self._last_voiced_at = now
        if not self._started and self._voiced >= self._min_speech_frames:
            self._started = True
            events.append(VadEvent("start", now))
        elif self._paused:
            events.append(VadEvent("resume", now))
        self._paused = False
        if len(self._frames) >= self._max_frames and self._started:
            events.append(self._close(now))
        return events

    def _on_silent(self, now: float) -> list[VadEvent]:
        self._silence += 1
        if not self._started:
            if self._silence >= self._end_frames:   # a burst too short to count: drop it
                self._discard()
            return []
        if self._silence >= self._end_frames or len(self._frames) >= self._max_frames:
            return [self._close(now)]
        if self._silence == self._pause_frames:
            self._paused = True
            return [VadEvent("pause", now, ended_at=self._last_voiced_at)]
        return []

    def _close(self, now: float) -> VadEvent:
        keep = min(len(self._frames), self._last_voiced_index + self._tail_frames)
        audio = np.concatenate(self._frames[:keep])
        event = VadEvent(
            "end",
            now,
            audio=audio,
            speech_ms=int(self._voiced * self._frame * 1000 / SAMPLE_RATE),
            ended_at=self._last_voiced_at,
        )
        self._discard()
        return event

    def _discard(self) -> None:
        # Recent frames stay available as the next utterance's pre-roll.
        for frame in self._frames[-self._preroll_frames:]:
            self._preroll.append(frame)
        self._frames = []
        self._active = self._started = self._paused = False
        self._voiced = self._silence = 0
