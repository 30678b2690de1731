"""What the controller offers its adapters (D-Bus, tests): the one contract between them.

The D-Bus class (:mod:`daemon.service.dbus_service`) is a thin adapter over an object with
this shape; it never reaches into the pipeline itself.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

from daemon.messages import Emotion, ServiceEvent, TurnResult

STATES = ("starting", "listening", "hearing", "thinking", "speaking", "paused", "error")


class Controller(Protocol):
    # --- read-only state (D-Bus properties)
    @property
    def state(self) -> str: ...
    @property
    def paused(self) -> bool: ...
    @property
    def emotion(self) -> Emotion: ...
    @property
    def last_transcript(self) -> str: ...
    @property
    def last_reply(self) -> str: ...
    @property
    def last_timings(self) -> Mapping[str, float]:
        """Seconds of the last completed reply's stages (stt_s, retrieve_s, llm_first_token_s,
        first_audio_s, total_s); empty before the first."""
        ...
    @property
    def version(self) -> str: ...

    def knowledge_base_info(self) -> Mapping[str, Any]:
        """documents (int), chunks (int), last_indexed (float, unix time, 0 if never),
        failed (mapping file -> reason), indexing (str, "" when idle), folder (str, the folder
        indexed), index_dir (str, its index; "" until the knowledge base is set up)."""
        ...

    def models_info(self) -> Mapping[str, str]:
        """role -> model description, e.g. {"stt": "...", "llm": "...", "tts": "..."}."""
        ...

    def problems(self) -> Mapping[str, str]:
        """What keeps the service from working, by what it concerns ("speaker", "microphone",
        "startup"): why the state is 'error'. Empty when all is well."""
        ...

    def emotion_names(self) -> tuple[str, ...]: ...

    # --- commands; all raise daemon.errors.SottovoceError subclasses on bad input/state
    async def pause(self) -> None: ...
    async def resume(self) -> None: ...
    async def interrupt(self) -> None: ...
    async def set_emotion(self, name: str, intensity: float) -> None: ...
    async def ask(self, text: str) -> TurnResult:
        """Answers out loud; returns once the reply text is complete (speech may go on)."""
        ...
    async def say(self, text: str) -> None: ...
    async def reindex(self) -> None: ...
    async def reload(self) -> None: ...

    # --- events
    def subscribe(self, callback: Callable[[ServiceEvent], None]) -> Callable[[], None]:
        """Call ``callback`` on the event loop for every event; returns an unsubscribe function."""
        ...
