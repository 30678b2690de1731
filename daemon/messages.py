"""Every message that crosses a stage boundary: frozen dataclasses, one module.

Each message is stamped with the ``turn`` (the interruption epoch) it belongs to.
*Control* messages are never dropped; *data* messages are dropped on barge-in when their
turn is no longer current (see :mod:`daemon.service.interruption`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

# The longest question or text to say, in characters (D-Bus Ask/Say and the CLI alike).
MAX_TEXT_CHARS = 2000


# ------------------------------------------------------------------ data messages
@dataclass(frozen=True)
class DataMessage:
    turn: int


@dataclass(frozen=True)
class Utterance(DataMessage):
    """A complete stretch of user speech cut out by the endpointer (16 kHz float32 mono)."""

    audio: np.ndarray = field(repr=False)
    speech_ms: int = 0
    ended_at: float = 0.0          # time.monotonic() when the last voiced frame was read


@dataclass(frozen=True)
class Transcript(DataMessage):
    text: str
    no_speech_prob: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class Passage:
    """One retrieved piece of the knowledge base."""

    text: str
    source: str                    # file name relative to the knowledge-base folder
    score: float
    position: int = 0              # chunk number inside the file
    heading: str = ""


@dataclass(frozen=True)
class Retrieved(DataMessage):
    query: str
    passages: tuple[Passage, ...]
    relevant: bool                 # False -> the no-context (chat) path


@dataclass(frozen=True)
class TextChunk(DataMessage):
    """A clause of the reply, ready to be spoken."""

    text: str                      # as the LLM wrote it (kept for history)
    speakable: str                 # cleaned for the TTS
    index: int = 0


@dataclass(frozen=True)
class AudioChunk(DataMessage):
    samples: np.ndarray = field(repr=False)   # float32 mono in [-1, 1]
    sample_rate: int = 22050
    chunk_index: int = 0           # which TextChunk it came from
    last: bool = False


# --------------------------------------------------------------- control messages
@dataclass(frozen=True)
class ControlMessage:
    turn: int


@dataclass(frozen=True)
class SpeechStarted(ControlMessage):
    at: float = 0.0


@dataclass(frozen=True)
class SpeechPaused(ControlMessage):
    """Silence began after speech: a speculative transcription may start."""

    at: float = 0.0


@dataclass(frozen=True)
class Interruption(ControlMessage):
    spoken_part: str = ""


@dataclass(frozen=True)
class StageError(ControlMessage):
    stage: str
    code: str
    message: str


@dataclass(frozen=True)
class Emotion:
    name: str = "neutral"
    intensity: float = 0.5


@dataclass(frozen=True)
class ChatMessage:
    role: str                      # system | user | assistant
    content: str


@dataclass(frozen=True)
class TurnResult:
    """What one question produced (the CLI's --json and D-Bus Ask's return)."""

    transcript: str
    reply: str
    sources: tuple[str, ...]
    timings: Mapping[str, float]
    interrupted: bool = False
    spoken_part: str = ""


# ------------------------------------------------- service events (controller -> D-Bus)
@dataclass(frozen=True)
class ServiceEvent:
    """Published by the controller; the D-Bus adapter turns them into signals/properties."""


@dataclass(frozen=True)
class StateChanged(ServiceEvent):
    state: str                     # starting|listening|hearing|thinking|speaking|paused|error


@dataclass(frozen=True)
class PropertyChanged(ServiceEvent):
    name: str                      # D-Bus property name: Paused, Emotion, LastTranscript, ...


@dataclass(frozen=True)
class TranscriptEvent(ServiceEvent):
    text: str


@dataclass(frozen=True)
class ReplyEvent(ServiceEvent):
    text: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class InterruptedEvent(ServiceEvent):
    spoken_part: str


@dataclass(frozen=True)
class ErrorEvent(ServiceEvent):
    code: str
    message: str


@dataclass(frozen=True)
class IndexUpdatedEvent(ServiceEvent):
    documents: int
    chunks: int
