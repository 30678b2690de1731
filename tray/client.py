"""The tray's D-Bus client: follows the service live and sends it commands.

It runs its own asyncio loop (dbus-fast) in a background thread, so the GTK main loop that
pystray owns never waits on the bus and the service is never waited on by the tray. It
follows ``PropertiesChanged`` and the service's signals (no polling) and ``NameOwnerChanged``
to go offline when the service leaves the bus and online again when it returns.

Menu callbacks (GTK thread) reach the loop through one bridge, :meth:`AssistantClient.submit`
(``asyncio.run_coroutine_threadsafe``). Callbacks to the tray (``on_change``, ``on_error``,
``on_index_updated``) run on the client's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, Sequence

from dbus_fast import Message, MessageType, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus

_LOGGER = logging.getLogger(__name__)

BUS_NAME = "org.sottovoce.Assistant"
OBJECT_PATH = "/org/sottovoce/Assistant"
INTERFACE = "org.sottovoce.Assistant1"
TRAY_BUS_NAME = "org.sottovoce.Tray"   # held while a tray runs: one tray per session
_PROPERTIES = "org.freedesktop.DBus.Properties"
_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
_NOTIFICATIONS = ("org.freedesktop.Notifications", "/org/freedesktop/Notifications",
                  "org.freedesktop.Notifications")
_RECONNECT_S = 2.0


@dataclass(frozen=True)
class ServiceView:
    """What the tray knows of the service: its properties, and whether it is on the bus."""

    online: bool = False
    state: str = "starting"
    paused: bool = False
    emotion: str = "neutral"
    intensity: float = 0.5
    last_transcript: str = ""
    last_reply: str = ""
    version: str = ""
    indexing: str = ""           # the knowledge base's progress while it indexes, else ""
    problems: tuple[tuple[str, str], ...] = ()   # why the state is 'error': (what, why), sorted


class CallFailed(Exception):
    """A D-Bus call was refused: ``code`` is the error name's last part (e.g. UnknownEmotion)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def session_bus_address() -> str:
    """The session bus address, falling back to ``$XDG_RUNTIME_DIR/bus`` as libdbus does."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return f"unix:path={Path(runtime) / 'bus'}"


def apply_properties(view: ServiceView, props: dict[str, Any]) -> ServiceView:
    """``view`` updated from D-Bus property values (plain values or Variants) by name."""
    values = {k: (v.value if isinstance(v, Variant) else v) for k, v in props.items()}
    changes: dict[str, Any] = {}
    simple = {"State": "state", "Paused": "paused", "LastTranscript": "last_transcript",
              "LastReply": "last_reply", "Version": "version"}
    for prop, attr in simple.items():
        if prop in values:
            changes[attr] = values[prop]
    if "Emotion" in values:
        name, intensity = values["Emotion"]
        changes["emotion"], changes["intensity"] = str(name), float(intensity)
    if "Problems" in values:
        changes["problems"] = tuple(sorted((str(k), str(v)) for k, v in dict(values["Problems"]).items()))
    if "KnowledgeBase" in values:
        kb = {k: (v.value if isinstance(v, Variant) else v) for k, v in values["KnowledgeBase"].items()}
        changes["indexing"] = str(kb.get("indexing", ""))
    return dataclasses.replace(view, **changes)


class AssistantClient:
    """A live, thread-safe view of the service plus its commands.

    ``on_change(view)`` is called with every new :class:`ServiceView`; ``on_error(code, message)``
    for the service's ``Error`` signal and for refused commands; ``on_index_updated(documents,
    chunks)`` for ``IndexUpdated``; ``on_duplicate()`` when another tray already holds
    :data:`TRAY_BUS_NAME` on this session (the client then stops).
    """

    def __init__(
        self,
        on_change: Callable[[ServiceView], None],
        on_error: Callable[[str, str], None],
        on_index_updated: Callable[[int, int], None] | None = None,
        on_duplicate: Callable[[], None] | None = None,
        *,
        bus_address: str | None = None,
        call_timeout_s: float = 120.0,
    ) -> None:
        self._on_change = on_change
        self._on_error = on_error
        self._on_index_updated = on_index_updated
        self._on_duplicate = on_duplicate
        self._address = bus_address
        self._timeout = call_timeout_s
        self._view = ServiceView()
        self._owner = ""
        self._bus: MessageBus | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._thread_main, name="sottovoce-dbus", daemon=True)
        self._stopping = asyncio.Event()  # bound to the client's loop on first use there
        self._connected = asyncio.Event()  # on the bus (and this session's one tray)
        self._notification_id = 0

    @property
    def view(self) -> ServiceView:
        """The latest view (an immutable snapshot; safe to read from any thread)."""
        return self._view

    def start(self) -> None:
        """Start the background thread; it connects and keeps reconnecting until :meth:`stop`."""
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect and end the background thread (waits at most ``timeout_s``)."""
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._request_stop)
        self._thread.join(timeout_s)

    # --- the one bridge from other threads -----------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run ``coro`` on the client's loop; failures are reported through ``on_error``."""
        return asyncio.run_coroutine_threadsafe(self._reporting(coro), self._loop)

    def pause(self) -> concurrent.futures.Future[Any]:
        return self.submit(self.call("Pause"))

    def resume(self) -> concurrent.futures.Future[Any]:
        return self.submit(self.call("Resume"))

    def interrupt(self) -> concurrent.futures.Future[Any]:
        return self.submit(self.call("Interrupt"))

    def set_emotion(self, name: str, intensity: float) -> concurrent.futures.Future[Any]:
        return self.submit(self.call("SetEmotion", "sd", [name, float(intensity)]))

    def reindex(self) -> concurrent.futures.Future[Any]:
        return self.submit(self.call("Reindex"))

    def notify(self, summary: str, body: str, icon: str = "") -> concurrent.futures.Future[Any]:
        """Show a desktop notification (replacing the previous one from this tray)."""
        return self.submit(self._notify(summary, body, icon))

    # --- coroutines (client loop only) ---------------------------------------------------
    async def call(self, member: str, signature: str = "", body: Sequence[Any] = ()) -> list[Any]:
        """Call ``member`` on the service; raises :class:`CallFailed` when it is refused."""
        return await self._call((BUS_NAME, OBJECT_PATH, INTERFACE), member, signature, body)

    async def _call(self, target: tuple[str, str, str], member: str, signature: str = "",
                    body: Sequence[Any] = ()) -> list[Any]:
        bus = self._bus
        if bus is None or not bus.connected:
            raise CallFailed("NoBus", "not connected to the session bus")
        destination, path, interface = target
        message = Message(destination=destination, path=path, interface=interface,
                          member=member, signature=signature, body=list(body))
        reply = await asyncio.wait_for(bus.call(message), self._timeout)
        if reply is None:
            return []
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name or "failed"
            raise CallFailed((reply.error_name or "Failed").rsplit(".", 1)[-1], str(text))
        return list(reply.body)

    async def _reporting(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except CallFailed as exc:
            _LOGGER.debug("the service refused a command: %s (%s)", exc, exc.code)
            self._on_error(exc.code, str(exc))
        except asyncio.TimeoutError:
            _LOGGER.warning("the service did not answer within %.0f s", self._timeout)
            self._on_error("Timeout", "The service did not answer in time.")
        except Exception:  # a menu click must never take the tray down
            _LOGGER.exception("a command to the service failed")
        return None

    async def _notify(self, summary: str, body: str, icon: str) -> None:
        hints = {"urgency": Variant("y", 2)}
        try:
            # Asked for before the bus is reached (a problem found at start): wait for it.
            await asyncio.wait_for(self._connected.wait(), self._timeout)
            reply = await self._call(_NOTIFICATIONS, "Notify", "susssasa{sv}i",
                                     ["Sottovoce", self._notification_id, icon, summary, body,
                                      [], hints, -1])
            self._notification_id = int(reply[0])
        except (CallFailed, asyncio.TimeoutError) as exc:
            # No notification daemon is not worth more than a log line.
            _LOGGER.warning("cannot show a desktop notification (%s): %s: %s", exc, summary, body)

    def _thread_main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._run())
        finally:
            self._loop.close()

    def _request_stop(self) -> None:
        self._stopping.set()
        if self._bus is not None:
            self._bus.disconnect()

    async def _run(self) -> None:
        """Connect, follow, and reconnect after losing the bus, until asked to stop."""
        while not self._stopping.is_set():
            try:
                await self._session()
            except Exception as exc:  # whatever broke the connection, the loop reconnects
                _LOGGER.warning("session bus unavailable (%r); retrying in %.0f s", exc, _RECONNECT_S)
            self._connected.clear()
            self._bus = None
            if self._stopping.is_set():
                break
            self._set_view(dataclasses.replace(self._view, online=False))
            try:
                await asyncio.wait_for(self._stopping.wait(), _RECONNECT_S)
            except asyncio.TimeoutError:
                pass

    async def _session(self) -> None:
        bus = await MessageBus(bus_address=self._address or session_bus_address()).connect()
        self._bus = bus
        # Autostart and the systemd unit are alternatives; if both are enabled, one tray wins.
        if await bus.request_name(TRAY_BUS_NAME, NameFlag.DO_NOT_QUEUE) != RequestNameReply.PRIMARY_OWNER:
            _LOGGER.warning("another sottovoce-tray already runs in this session")
            self._stopping.set()
            bus.disconnect()
            if self._on_duplicate is not None:
                self._on_duplicate()
            return
        self._connected.set()
        bus.add_message_handler(self._on_message)
        sender = f"sender='{_DBUS[0]}',interface='{_DBUS[2]}',member='NameOwnerChanged'"
        await self._call(_DBUS, "AddMatch", "s", [f"type='signal',{sender},arg0='{BUS_NAME}'"])
        await self._call(_DBUS, "AddMatch", "s",
                         [f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}'"])
        try:
            (owner,) = await self._call(_DBUS, "GetNameOwner", "s", [BUS_NAME])
        except CallFailed:
            owner = ""
        await self._owner_changed(owner)
        await bus.wait_for_disconnect()

    async def _owner_changed(self, owner: str) -> None:
        self._owner = owner
        if not owner:
            _LOGGER.info("the service is not on the bus")
            self._set_view(dataclasses.replace(self._view, online=False))
            return
        try:
            (props,) = await self._call((owner, OBJECT_PATH, _PROPERTIES), "GetAll", "s", [INTERFACE])
        except (CallFailed, asyncio.TimeoutError) as exc:
            _LOGGER.warning("cannot read the service's properties: %s", exc)
            return
        if owner == self._owner:  # it may have left again meanwhile
            _LOGGER.info("the service is on the bus (%s)", owner)
            self._set_view(apply_properties(dataclasses.replace(self._view, online=True), props))

    def _set_view(self, view: ServiceView) -> None:
        if view == self._view:
            return
        self._view = view
        try:
            self._on_change(view)
        except Exception:  # a bug in the tray's drawing must not stop the client
            _LOGGER.exception("on_change failed")

    def _on_message(self, message: Message) -> None:
        if message.message_type != MessageType.SIGNAL:
            return
        if message.member == "NameOwnerChanged" and message.interface == _DBUS[2]:
            name, _old, new = message.body
            if name == BUS_NAME:
                self._owner = new  # now, so that its first signals are not dropped
                self._loop.create_task(self._owner_changed(new), name="owner-changed")
            return
        if message.path != OBJECT_PATH or message.sender != self._owner or not self._owner:
            return
        if message.interface == _PROPERTIES and message.member == "PropertiesChanged":
            interface, changed, invalidated = message.body
            if interface == INTERFACE:
                self._set_view(apply_properties(self._view, changed))
                if invalidated:
                    self._loop.create_task(self._owner_changed(self._owner), name="refresh")
        elif message.interface == INTERFACE:
            self._on_service_signal(message.member or "", list(message.body))

    def _on_service_signal(self, member: str, body: list[Any]) -> None:
        if member == "StateChanged":
            self._set_view(dataclasses.replace(self._view, state=str(body[0])))
        elif member == "Transcript":
            self._set_view(dataclasses.replace(self._view, last_transcript=str(body[0])))
        elif member == "Reply":
            self._set_view(dataclasses.replace(self._view, last_reply=str(body[0])))
        elif member == "Error":
            self._on_error(str(body[0]), str(body[1]))
        elif member == "IndexUpdated" and self._on_index_updated is not None:
            self._on_index_updated(int(body[0]), int(body[1]))
