"""A dbus-fast test client for the assistant: calls, properties and a log of its signals."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from daemon.service.dbus_service import BUS_NAME, INTERFACE, OBJECT_PATH

if TYPE_CHECKING:
    from dbus_fast import Message
    from dbus_fast.aio import MessageBus

PROPERTIES = "org.freedesktop.DBus.Properties"


class Client:
    """A dbus-fast connection to the private bus that calls the assistant and records its
    signals (PropertiesChanged included) in arrival order."""

    def __init__(self, bus: "MessageBus") -> None:
        self.bus = bus
        self.signals: list[tuple[str, list[Any]]] = []
        self._arrived = asyncio.Event()

    @classmethod
    async def connect(cls, address: str) -> "Client":
        from dbus_fast.aio import MessageBus

        client = cls(await MessageBus(bus_address=address).connect())
        client.bus.add_message_handler(client._on_message)
        await client.bus_call("AddMatch", "s", [f"type='signal',sender='{BUS_NAME}'"])
        return client

    def _on_message(self, msg: "Message") -> None:
        from dbus_fast import MessageType

        if msg.message_type == MessageType.SIGNAL and msg.path == OBJECT_PATH:
            self.signals.append((msg.member, list(msg.body)))
            self._arrived.set()

    async def bus_call(self, member: str, signature: str, body: list[Any]) -> list[Any]:
        from dbus_fast import Message

        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member=member, signature=signature, body=body))
        return list(reply.body)

    async def call(self, member: str, signature: str = "", body: list[Any] | None = None,
                   interface: str = INTERFACE) -> list[Any]:
        """Call the assistant; a DBusError (with ``.type``, ``.text``) on an error reply."""
        from dbus_fast import DBusError, Message, MessageType

        reply = await self.bus.call(Message(
            destination=BUS_NAME, path=OBJECT_PATH, interface=interface, member=member,
            signature=signature, body=body or []))
        if reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
        return list(reply.body)

    async def get(self, prop: str) -> Any:
        (value,) = await self.call("Get", "ss", [INTERFACE, prop], interface=PROPERTIES)
        return value.value

    async def get_all(self) -> dict[str, Any]:
        (props,) = await self.call("GetAll", "s", [INTERFACE], interface=PROPERTIES)
        return {k: v.value for k, v in props.items()}

    def mark(self) -> int:
        """Position in the signal log; pass to :meth:`wait_signal` to look only at later ones."""
        return len(self.signals)

    async def wait_signal(self, member: str, match: Callable[[list[Any]], bool] = lambda a: True,
                          after: int = 0, timeout: float = 30.0) -> list[Any]:
        """The body of the first signal ``member`` (at or after ``after``) that ``match``es."""
        async def find() -> list[Any]:
            seen = after
            while True:
                for name, body in self.signals[seen:]:
                    if name == member and match(body):
                        return body
                seen = len(self.signals)
                self._arrived.clear()
                await self._arrived.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            got = [(n, b) for n, b in self.signals[after:]][-8:]
            raise AssertionError(f"no {member} signal within {timeout:.0f} s; got {got}") from None

    def changed(self, after: int = 0) -> dict[str, Any]:
        """Every property announced by PropertiesChanged since ``after`` (latest value wins)."""
        out: dict[str, Any] = {}
        for name, body in self.signals[after:]:
            if name == "PropertiesChanged" and body[0] == INTERFACE:
                out.update({k: v.value for k, v in body[1].items()})
        return out

    def close(self) -> None:
        self.bus.disconnect()


def run_async(coro_fn: Callable[..., Any], *args: Any, timeout: float = 120) -> Any:
    """Run one test scenario on a fresh event loop, with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro_fn(*args), timeout))
