"""The D-Bus face of the service: a thin dbus-fast adapter over a :class:`Controller`.

The contract is ``dbus/org.sottovoce.Assistant1.xml``. This module only checks arguments,
translates errors into named D-Bus errors, and turns controller events into signals and
``PropertiesChanged``; everything else happens in the controller.

No ``from __future__ import annotations`` here: dbus-fast reads the ``-> None`` of a method
as a signature, and a postponed "None" string would not parse.
"""

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Mapping

from dbus_fast import DBusError, NameFlag, RequestNameReply, Variant
from dbus_fast.annotations import DBusBool, DBusDict, DBusDouble, DBusSignature, DBusStr
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method, signal
from dbus_fast import introspection as intr

from daemon.errors import AlreadyRunningError, BadArgumentError, ReplyInterruptedError, SottovoceError
from daemon.messages import (
    ErrorEvent, IndexUpdatedEvent, InterruptedEvent, ReplyEvent, ServiceEvent, StateChanged,
    TranscriptEvent,
)
from daemon.kb.files import printable
from daemon.service import turns
from daemon.service.api import Controller

_LOGGER = logging.getLogger(__name__)

BUS_NAME = "org.sottovoce.Assistant"
OBJECT_PATH = "/org/sottovoce/Assistant"
INTERFACE = "org.sottovoce.Assistant1"
ERROR_PREFIX = INTERFACE + ".Error."

DBusEmotion = Annotated[list[Any], DBusSignature("(sd)")]
DBusStrMap = Annotated[dict[str, str], DBusSignature("a{ss}")]
DBusTimings = Annotated[dict[str, float], DBusSignature("a{sd}")]
DBusReplyOut = Annotated[list[Any], DBusSignature("sas")]      # reply, sources
DBusTwoStr = Annotated[list[str], DBusSignature("ss")]         # code, message
DBusTwoUInt = Annotated[list[int], DBusSignature("uu")]        # documents, chunks

# dbus-fast cannot name output and signal arguments; the contract does, so add the names.
_OUT_ARG_NAMES: dict[str, tuple[str, ...]] = {
    "Ask": ("reply", "sources"),
    "StateChanged": ("state",),
    "Transcript": ("text",),
    "Reply": ("text", "sources"),
    "Interrupted": ("spoken_part",),
    "Error": ("code", "message"),
    "IndexUpdated": ("documents", "chunks"),
}


def session_bus_address(env: Mapping[str, str] | None = None) -> str:
    """The session bus address: ``DBUS_SESSION_BUS_ADDRESS``, else ``$XDG_RUNTIME_DIR/bus``
    (what busctl and gdbus fall back to; dbus-fast does not)."""
    env = os.environ if env is None else env
    address = env.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix:path={runtime}/bus"


def dbus_error(code: str, message: str) -> DBusError:
    """A named error ``org.sottovoce.Assistant1.Error.<code>``."""
    return DBusError(ERROR_PREFIX + code, message)


def _to_dbus_error(exc: BaseException) -> DBusError:
    if isinstance(exc, DBusError):
        return exc
    if isinstance(exc, SottovoceError):
        return dbus_error(exc.code, str(exc) or type(exc).__name__)
    _LOGGER.exception("D-Bus call failed unexpectedly")
    return dbus_error("Failed", f"the service failed unexpectedly ({type(exc).__name__}); "
                      "see `journalctl --user -u sottovoce`")


def _interrupted() -> DBusError:
    return _to_dbus_error(ReplyInterruptedError(
        "the reply was cut short (by the user speaking, Interrupt() or a newer question) before it was complete"))


def check_text(text: str, what: str = "text") -> str:
    """Refuse empty, over-long or wordless text with InvalidArgument (the controller's own check)."""
    try:
        return turns.check_text(text, what)
    except BadArgumentError as exc:
        raise _to_dbus_error(exc) from None


class AssistantInterface(ServiceInterface):
    """``org.sottovoce.Assistant1`` over one controller."""

    def __init__(self, controller: Controller) -> None:
        super().__init__(INTERFACE)
        self._controller = controller
        self._announced = self._snapshot()
        self._unsubscribe: Callable[[], None] | None = None

    # ---------------------------------------------------------------- plumbing
    def attach(self) -> None:
        """Start turning controller events into signals."""
        if self._unsubscribe is None:
            self._announced = self._snapshot()
            self._unsubscribe = self._controller.subscribe(self._on_event)

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def introspect(self) -> intr.Interface:
        interface = super().introspect()
        for member in [*interface.methods, *interface.signals]:
            names = _OUT_ARG_NAMES.get(member.name, ())
            args = member.out_args if isinstance(member, intr.Method) else member.args
            for arg, name in zip(args, names):
                arg.name = name
        return interface

    def _snapshot(self) -> dict[str, Any]:
        """Every property's current value, in its D-Bus form."""
        c = self._controller
        return {
            "State": c.state,
            "Paused": bool(c.paused),
            "Emotion": [c.emotion.name, float(c.emotion.intensity)],
            "LastTranscript": c.last_transcript,
            "LastReply": c.last_reply,
            "LastTimings": _timings(c.last_timings),
            "KnowledgeBase": _kb_variants(c.knowledge_base_info()),
            "Models": {str(k): str(v) for k, v in c.models_info().items()},
            "Version": c.version,
            "Problems": {str(k): str(v) for k, v in c.problems().items()},
        }

    def _sync_properties(self) -> None:
        """Announce, in one PropertiesChanged, every property whose value moved."""
        now = self._snapshot()
        changed = {name: value for name, value in now.items() if self._announced.get(name) != value}
        self._announced = now
        if changed:
            self.emit_properties_changed(changed)

    def _on_event(self, event: ServiceEvent) -> None:
        try:
            self._sync_properties()
            self._emit_signal(event)
        except Exception:   # a bad event must not stop the controller's publisher
            _LOGGER.exception("could not publish %r on D-Bus", event)

    def _emit_signal(self, event: ServiceEvent) -> None:
        if isinstance(event, StateChanged):
            self.StateChanged(event.state)
        elif isinstance(event, TranscriptEvent):
            self.Transcript(event.text)
        elif isinstance(event, ReplyEvent):
            self.Reply(event.text, list(event.sources))
        elif isinstance(event, InterruptedEvent):
            self.Interrupted(event.spoken_part)
        elif isinstance(event, ErrorEvent):
            self.Error(event.code, event.message)
        elif isinstance(event, IndexUpdatedEvent):
            self.IndexUpdated(event.documents, event.chunks)

    async def _call(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await coro_fn(*args)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise               # this call itself is being cancelled (shutdown)
            # The turn we were waiting on was cancelled: barge-in, Interrupt() or a newer one.
            raise _interrupted() from None
        except Exception as exc:
            raise _to_dbus_error(exc) from exc

    # ----------------------------------------------------------------- methods
    @method()
    async def Pause(self) -> None:
        await self._call(self._controller.pause)

    @method()
    async def Resume(self) -> None:
        await self._call(self._controller.resume)

    @method()
    async def Interrupt(self) -> None:
        await self._call(self._controller.interrupt)

    @method()
    async def SetEmotion(self, name: DBusStr, intensity: DBusDouble) -> None:
        names = tuple(self._controller.emotion_names())
        if name not in names:
            raise dbus_error("UnknownEmotion", f"unknown emotion {name!r}; choose one of: "
                             + ", ".join(names))
        if math.isnan(intensity) or not 0.0 <= intensity <= 1.0:
            raise dbus_error("InvalidArgument", f"intensity {intensity} is out of range; "
                             "give a number from 0 to 1")
        await self._call(self._controller.set_emotion, name, float(intensity))

    @method()
    async def Ask(self, text: DBusStr) -> DBusReplyOut:
        text = check_text(text, "question")
        result = await self._call(self._controller.ask, text)
        if result.interrupted:      # what was spoken travels in the Interrupted signal
            raise _interrupted()
        return [result.reply, list(result.sources)]

    @method()
    async def Say(self, text: DBusStr) -> None:
        text = check_text(text)
        await self._call(self._controller.say, text)

    @method()
    async def Reindex(self) -> None:
        await self._call(self._controller.reindex)

    @method()
    async def Reload(self) -> None:
        await self._call(self._controller.reload)

    # -------------------------------------------------------------- properties
    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self._controller.state

    @dbus_property(access=PropertyAccess.READ)
    def Paused(self) -> DBusBool:
        return bool(self._controller.paused)

    @dbus_property(access=PropertyAccess.READ)
    def Emotion(self) -> DBusEmotion:
        emotion = self._controller.emotion
        return [emotion.name, float(emotion.intensity)]

    @dbus_property(access=PropertyAccess.READ)
    def LastTranscript(self) -> DBusStr:
        return self._controller.last_transcript

    @dbus_property(access=PropertyAccess.READ)
    def LastReply(self) -> DBusStr:
        return self._controller.last_reply

    @dbus_property(access=PropertyAccess.READ)
    def LastTimings(self) -> DBusTimings:
        return _timings(self._controller.last_timings)

    @dbus_property(access=PropertyAccess.READ)
    def KnowledgeBase(self) -> DBusDict:
        return _kb_variants(self._controller.knowledge_base_info())

    @dbus_property(access=PropertyAccess.READ)
    def Models(self) -> DBusStrMap:
        return {str(k): str(v) for k, v in self._controller.models_info().items()}

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return self._controller.version

    @dbus_property(access=PropertyAccess.READ)
    def Problems(self) -> DBusStrMap:
        return {str(k): str(v) for k, v in self._controller.problems().items()}

    # ----------------------------------------------------------------- signals
    @signal()
    def StateChanged(self, state: str) -> DBusStr:
        return state

    @signal()
    def Transcript(self, text: str) -> DBusStr:
        return text

    @signal()
    def Reply(self, text: str, sources: list[str]) -> DBusReplyOut:
        return [text, sources]

    @signal()
    def Interrupted(self, spoken_part: str) -> DBusStr:
        return spoken_part

    @signal()
    def Error(self, code: str, message: str) -> DBusTwoStr:
        return [code, message]

    @signal()
    def IndexUpdated(self, documents: int, chunks: int) -> DBusTwoUInt:
        return [documents, chunks]


def _timings(timings: Mapping[str, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in timings.items()}


def _kb_variants(info: Mapping[str, Any]) -> dict[str, Variant]:
    """The controller's knowledge-base summary as a{sv} with fixed types per key. ``folder``
    and ``index_dir`` came later: clients must take a reply without them (an older service)."""
    failed = info.get("failed") or {}
    return {
        "documents": Variant("u", int(info.get("documents", 0))),
        "chunks": Variant("u", int(info.get("chunks", 0))),
        "last_indexed": Variant("d", float(info.get("last_indexed", 0.0))),
        "failed": Variant("a{ss}", {printable(str(k)): printable(str(v)) for k, v in failed.items()}),
        "indexing": Variant("s", printable(str(info.get("indexing", "")))),
        "folder": Variant("s", printable(str(info.get("folder", "")))),
        "index_dir": Variant("s", printable(str(info.get("index_dir", "")))),
        "save_error": Variant("s", printable(str(info.get("save_error", "")))),
    }


@dataclass
class DBusHandle:
    """The exported service: its bus connection and interface. ``close()`` leaves the bus."""

    bus: MessageBus
    interface: AssistantInterface
    address: str
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.interface.detach()
        if self.bus.connected:
            self.bus.disconnect()
            await self.bus.wait_for_disconnect()


async def connect_session_bus(address: str | None = None) -> MessageBus:
    """Connect to the session bus; a SottovoceError with one line when it is unreachable."""
    address = address or session_bus_address()
    try:
        return await MessageBus(bus_address=address).connect()
    except (OSError, DBusFastError, EOFError) as exc:
        raise SottovoceError(
            f"cannot reach the D-Bus session bus at {address} ({exc}); run inside a desktop "
            "session or set DBUS_SESSION_BUS_ADDRESS") from exc


async def export_on_bus(controller: Controller, bus_address: str | None = None) -> DBusHandle:
    """Export ``controller`` at OBJECT_PATH and own BUS_NAME; AlreadyRunningError if taken."""
    address = bus_address or session_bus_address()
    bus = await connect_session_bus(address)
    interface = AssistantInterface(controller)
    bus.export(OBJECT_PATH, interface)
    # DO_NOT_QUEUE: a second instance must fail now, not wait silently in the queue.
    reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        bus.disconnect()
        raise AlreadyRunningError(
            f"another sottovoced already owns {BUS_NAME} on the session bus; stop it first "
            "(`systemctl --user stop sottovoce`) or talk to it with `sottovoce status`")
    interface.attach()
    _LOGGER.info("on the session bus as %s", BUS_NAME)
    return DBusHandle(bus, interface, address)
