"""Open the service's microphone and speaker, wired to the controller's callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from daemon.audio.devices import AudioInput, AudioOutput, make_microphone, make_speaker
from daemon.audio.mic import Microphone
from daemon.config import Config

if TYPE_CHECKING:
    from daemon.service.controller import AssistantController


def open_output(cfg: Config, spec: str | None, ctl: "AssistantController") -> AudioOutput:
    return make_speaker(cfg.audio, on_first_audio=ctl.first_sound,
                        on_error=lambda msg: ctl.device_error("speaker", msg),
                        on_recovered=lambda msg: ctl.device_recovered("speaker", msg),
                        output_spec=spec)


def open_input(cfg: Config, spec: str | None, ctl: "AssistantController") -> AudioInput:
    def on_frame(frame: Any, t: float) -> None:
        hearing = ctl.hearing          # looked up each time: Reload() replaces it
        if hearing is not None:
            hearing.on_frame(frame, t)

    def idle() -> bool:
        hearing = ctl.hearing
        return hearing is not None and hearing.idle

    mic = make_microphone(cfg.audio, on_frame,
                          on_error=lambda msg: ctl.device_error("microphone", msg),
                          on_recovered=lambda msg: ctl.device_recovered("microphone", msg),
                          input_spec=spec)
    if isinstance(mic, Microphone):
        mic.idle_check = idle
    return mic


__all__ = ["open_input", "open_output"]
