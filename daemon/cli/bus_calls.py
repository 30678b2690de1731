"""The D-Bus calls the CLI makes to the assistant and to the bus itself, and how their
error replies become :class:`daemon.errors.SottovoceError` (or :class:`ServiceAbsent`)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from daemon.cli.remote_format import printable_text
from daemon.errors import EXIT_NO_SERVICE, SottovoceError
from daemon.service.dbus_service import BUS_NAME, ERROR_PREFIX, INTERFACE, OBJECT_PATH

T = TypeVar("T")

PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
# What the bus answers when nobody owns the name and activation could not start it.
_ABSENT_ERRORS = ("org.freedesktop.DBus.Error.ServiceUnknown",
                  "org.freedesktop.DBus.Error.NameHasNoOwner",
                  "org.freedesktop.DBus.Error.Spawn.", "org.freedesktop.systemd1.")


class ServiceAbsent(Exception):
    """Nobody owns org.sottovoce.Assistant on the session bus."""


class BusUnreachable(SottovoceError):
    """No connection to the session bus at all (a bad DBUS_SESSION_BUS_ADDRESS, no session
    bus): its message says why. The service cannot be reached: the same exit code as absent."""

    exit_code = EXIT_NO_SERVICE


# ------------------------------------------------------------------ D-Bus plumbing
def error_class(code: str) -> type[SottovoceError]:
    """The SottovoceError named by a D-Bus error code (``Model`` -> ModelError, exit 6)."""
    pending: list[type[SottovoceError]] = [SottovoceError]
    while pending:
        cls = pending.pop()
        if cls.__dict__.get("code") == code:
            return cls
        pending.extend(cls.__subclasses__())
    return SottovoceError


def _raise_for(reply: Message) -> None:
    """Turn an error reply into ServiceAbsent or the matching SottovoceError."""
    name = reply.error_name or ""
    # One line on the user's terminal: no control characters from the other end.
    text = printable_text(str(reply.body[0])) if reply.body else name
    if name.startswith(_ABSENT_ERRORS):
        raise ServiceAbsent(text)
    if name.startswith(ERROR_PREFIX):
        code = name[len(ERROR_PREFIX):]
        exc = error_class(code)(text)
        exc.code = code
        raise exc
    if name == "org.freedesktop.DBus.Error.NoReply":
        raise SottovoceError("the service did not answer (it may have stopped); "
                             "see `journalctl --user -u sottovoce`")
    raise SottovoceError(f"D-Bus call failed: {name}: {text}")


async def call(bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None,
               *, interface: str = INTERFACE, autostart: bool = True) -> list[Any]:
    """Call one method of the assistant; returns the reply body."""
    reply = await bus.call(Message(
        destination=BUS_NAME, path=OBJECT_PATH, interface=interface, member=member,
        signature=signature, body=body or [],
        flags=MessageFlag.NONE if autostart else MessageFlag.NO_AUTOSTART))
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        _raise_for(reply)
    return list(reply.body)


async def get_property(bus: MessageBus, name: str, *, autostart: bool = True) -> Any:
    """One property of the assistant, unwrapped into plain Python values."""
    (value,) = await call(bus, "Get", "ss", [INTERFACE, name], interface=PROPERTIES_IFACE, autostart=autostart)
    return unwrap(value)


async def get_all(bus: MessageBus) -> dict[str, Any]:
    """Every property of the assistant, unwrapped into plain Python values."""
    (props,) = await call(bus, "GetAll", "s", [INTERFACE], interface=PROPERTIES_IFACE)
    return {name: unwrap(value) for name, value in props.items()}


async def has_owner(bus: MessageBus) -> bool:
    reply = await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="NameHasOwner", signature="s", body=[BUS_NAME]))
    return bool(reply and reply.message_type == MessageType.METHOD_RETURN and reply.body[0])


async def call_bus(bus: MessageBus, member: str, signature: str, body: list[Any]) -> list[Any]:
    """Call a method of the bus daemon itself."""
    reply = await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member=member, signature=signature, body=body))
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        _raise_for(reply)
    return list(reply.body)


def unwrap(value: Any) -> Any:
    """Variants and D-Bus containers as plain JSON-friendly values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {str(k): unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [unwrap(v) for v in value]
    return value


async def answer(coro: Awaitable[T], timeout: float | None) -> T:
    """``coro``, or a one-line error when the service takes longer than ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise SottovoceError(f"the service did not answer within {timeout:.0f} s; "
                             "see `journalctl --user -u sottovoce`") from None
