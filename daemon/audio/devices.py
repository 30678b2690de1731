"""The audio devices of the always-on service, in one place.

=====================  ==================================================================
``Microphone``         ``audio.input`` through PortAudio, 16 kHz float32 frames of 512
``FileMicrophone``     ``--input FILE.wav``: the file at wall-clock pace, then silence
``NullMicrophone``     ``--input none``
``Speaker``            ``audio.output`` through PortAudio: tagged chunks, ``stop_now()``
``FileSpeaker``        ``--output FILE.wav``: what would have been played, in real time
=====================  ==================================================================

Threads: PortAudio's callbacks reach the event loop through one bridge,
``loop.call_soon_threadsafe``; every callback given to these classes (``on_frame``,
``on_error``, ``on_recovered``, ``on_first_audio``) runs on the event loop.

Device names: "default", a PortAudio index, a substring of a PortAudio device name, or a
substring of a PulseAudio/PipeWire source or sink name (e.g. the echo canceller's, see
:func:`echo_cancel_setup_commands`). A device that is missing at start or vanishes later is
reported through ``on_error(message)`` (naming it) and reopened when it returns
(``on_recovered(message)``); "default" follows the sound server's default instead, which
moves streams to another device by itself when one disappears.
"""

from __future__ import annotations

import os
from typing import Callable, Hashable, Protocol

import numpy as np

from daemon.audio.echo import EC_SINK, EC_SOURCE, echo_cancel_setup_commands
from daemon.audio.filedev import FileMicrophone, FileSpeaker, NullMicrophone
from daemon.audio.mic import FRAME_SAMPLES, FrameCallback, Microphone
from daemon.audio.speaker import Speaker
from daemon.config import AudioConfig

__all__ = [
    "AudioInput", "AudioOutput", "EC_SINK", "EC_SOURCE", "FRAME_SAMPLES", "FileMicrophone",
    "FileSpeaker", "Microphone", "NullMicrophone", "Speaker", "echo_cancel_setup_commands",
    "is_file_spec", "make_microphone", "make_speaker",
]

_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus")
MessageCallback = Callable[[str], None]


class AudioInput(Protocol):
    """What the controller needs from a microphone."""

    @property
    def device_label(self) -> str: ...
    @property
    def connected(self) -> bool: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class AudioOutput(Protocol):
    """What the controller needs from a speaker (device or file)."""

    @property
    def is_playing(self) -> bool: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def play(self, samples: np.ndarray, sample_rate: int, tag: Hashable = None) -> None: ...
    def stop_now(self) -> dict[Hashable, float]:
        """Stop at once, drop queued audio; fraction (0-1) played of each (turn, clause) tag."""
        ...
    def hold(self, on: bool) -> None:
        """Fall silent, keeping the queue (on=True), or go on playing it (False)."""
        ...
    def played_tags(self) -> dict[Hashable, float]: ...
    def forget(self) -> None: ...
    async def wait_done(self) -> None: ...


def is_file_spec(spec: str) -> bool:
    """True when ``--input``/``--output`` names a file rather than a device."""
    return spec.lower().endswith(_AUDIO_SUFFIXES) or os.sep in spec


def make_microphone(cfg: AudioConfig, on_frame: FrameCallback,
                    on_error: MessageCallback | None = None,
                    on_recovered: MessageCallback | None = None, *,
                    input_spec: str | None = None) -> AudioInput:
    """The input ``--input`` (or ``audio.input``) asks for: device, file, or none."""
    spec = cfg.input if input_spec is None else input_spec
    if spec.strip().lower() == "none":
        return NullMicrophone()
    if is_file_spec(spec):
        return FileMicrophone(spec, on_frame, sample_rate=cfg.sample_rate)
    return Microphone(cfg, on_frame, on_error, on_recovered, device=spec)


def make_speaker(cfg: AudioConfig, on_first_audio: Callable[[float], None] | None = None,
                 on_error: MessageCallback | None = None,
                 on_recovered: MessageCallback | None = None, *,
                 output_spec: str | None = None) -> AudioOutput:
    """The output ``--output`` (or ``audio.output``) asks for: device or file."""
    spec = cfg.output if output_spec is None else output_spec
    if is_file_spec(spec):
        return FileSpeaker(spec, on_first_audio)
    return Speaker(cfg, on_first_audio, on_error, on_recovered, device=spec)
