"""`sottovoce status | pause | resume | interrupt | emotion | say | reindex | reload | watch`:
commands that talk to the running service over D-Bus (``ask`` lives in :mod:`daemon.cli.local`
and reaches the service through :func:`remote_ask`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Awaitable, Callable, TypeVar

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from daemon.errors import EXIT_NO_SERVICE, EXIT_OK, BadArgumentError, SottovoceError
from daemon.service.dbus_service import (
    BUS_NAME, ERROR_PREFIX, INTERFACE, OBJECT_PATH, connect_session_bus,
)
from daemon.cli import remote_format

T = TypeVar("T")

NOT_RUNNING = ("sottovoce: the service is not running; start it with "
               "`systemctl --user start sottovoce` or `sottovoced`")
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
# What the bus answers when nobody owns the name and activation could not start it.
_ABSENT_ERRORS = ("org.freedesktop.DBus.Error.ServiceUnknown",
                  "org.freedesktop.DBus.Error.NameHasNoOwner",
                  "org.freedesktop.DBus.Error.Spawn.", "org.freedesktop.systemd1.")


class ServiceAbsent(Exception):
    """Nobody owns org.sottovoce.Assistant on the session bus (or there is no bus)."""


# ------------------------------------------------------------------ D-Bus plumbing
def _error_class(code: str) -> type[SottovoceError]:
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
    text = str(reply.body[0]) if reply.body else name
    if name.startswith(_ABSENT_ERRORS):
        raise ServiceAbsent(text)
    if name.startswith(ERROR_PREFIX):
        code = name[len(ERROR_PREFIX):]
        exc = _error_class(code)(text)
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


def unwrap(value: Any) -> Any:
    """Variants and D-Bus containers as plain JSON-friendly values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {str(k): unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [unwrap(v) for v in value]
    return value


def _run(session: Callable[[MessageBus], Awaitable[int]]) -> int:
    """Connect, run ``session``, disconnect; the one-line hint when the service is absent."""
    async def main() -> int:
        try:
            bus = await connect_session_bus()
        except SottovoceError as exc:
            raise ServiceAbsent(str(exc)) from exc
        try:
            return await session(bus)
        finally:
            bus.disconnect()

    try:
        return asyncio.run(main())
    except ServiceAbsent:
        print(NOT_RUNNING, file=sys.stderr)
        return EXIT_NO_SERVICE


# ------------------------------------------------------------------------ commands
def cmd_status(args: argparse.Namespace) -> int:
    async def session(bus: MessageBus) -> int:
        props = await get_all(bus)
        print(remote_format.status_json(props) if args.json else remote_format.status_text(props))
        return EXIT_OK
    return _run(session)


def _simple(member: str, done: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        async def session(bus: MessageBus) -> int:
            await call(bus, member)
            props = await get_all(bus)
            state, problems = str(props.get("State", "")), dict(props.get("Problems", {}))
            if state == "error" and problems:   # resumed, but not listening: say why
                print(f"{done}, but the state is error: " +
                      "; ".join(f"{what}: {why}" for what, why in sorted(problems.items())))
            else:
                print(done)
            return EXIT_OK
        return _run(session)
    handler.__name__ = f"cmd_{member.lower()}"
    return handler


def cmd_reload(args: argparse.Namespace) -> int:
    """Reload, then print what only a restart applies: the service names it in an Error
    signal (code Config) sent before its reply."""
    async def session(bus: MessageBus) -> int:
        notes: list[str] = []

        def on_message(msg: Message) -> None:
            if (msg.message_type == MessageType.SIGNAL and msg.member == "Error"
                    and msg.path == OBJECT_PATH and msg.body[:1] == ["Config"]):
                notes.append(str(msg.body[1]))

        bus.add_message_handler(on_message)
        await call_bus(bus, "AddMatch", "s",
                       [f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}',member='Error'"])
        await call(bus, "Reload")
        print("configuration reloaded")
        for note in notes:
            print(note)
        return EXIT_OK
    return _run(session)


def cmd_interrupt(args: argparse.Namespace) -> int:
    async def session(bus: MessageBus) -> int:
        state = str(await get_property(bus, "State"))
        await call(bus, "Interrupt")     # harmless when idle; the state may change meanwhile
        print("interrupted" if state in ("thinking", "speaking") else f"nothing to interrupt (the service was {state})")
        return EXIT_OK
    return _run(session)


def _intensity(text: str | None) -> float | None:
    """The optional INTENSITY argument; not a number is InvalidArgument, as in ``ask --emotion``."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise BadArgumentError(f"emotion intensity {text!r} is not a number (0 to 1)") from None


def cmd_emotion(args: argparse.Namespace) -> int:
    given = _intensity(args.intensity)          # before connecting: a typo needs no service

    async def session(bus: MessageBus) -> int:
        intensity = given
        if intensity is None:   # keep the current strength, change only the style
            intensity = float((await get_property(bus, "Emotion"))[1])
        await call(bus, "SetEmotion", "sd", [args.name, intensity])
        print(f"emotion: {args.name} ({intensity:.2f})")
        return EXIT_OK
    return _run(session)


def cmd_say(args: argparse.Namespace) -> int:
    async def session(bus: MessageBus) -> int:
        await call(bus, "Say", "s", [" ".join(args.text)])
        return EXIT_OK
    return _run(session)


def cmd_reindex(args: argparse.Namespace) -> int:
    async def session(bus: MessageBus) -> int:
        await call(bus, "Reindex")
        kb = (await get_all(bus))["KnowledgeBase"]
        print(json.dumps(kb) if args.json else remote_format.kb_text(kb))
        return EXIT_OK
    return _run(session)


def cmd_watch(args: argparse.Namespace) -> int:
    async def session(bus: MessageBus) -> int:
        gone = asyncio.get_running_loop().create_future()
        printed = [""]                      # the last line printed

        def on_message(msg: Message) -> None:
            if msg.message_type != MessageType.SIGNAL:
                return
            if msg.member == "NameOwnerChanged" and msg.body[:1] == [BUS_NAME]:
                if not msg.body[2] and not gone.done():
                    gone.set_result(None)
                return
            if msg.path != OBJECT_PATH:
                return
            line = remote_format.signal_line(msg.member, unwrap(msg.body), args.json)
            if line and not (line == printed[-1] and line.startswith("knowledge base: ")):
                print(line, flush=True)     # (the summary is announced again with IndexUpdated)
                printed[-1] = line

        bus.add_message_handler(on_message)
        for rule in (f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}'",
                     "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                     f"arg0='{BUS_NAME}'"):
            await call_bus(bus, "AddMatch", "s", [rule])
        # Reading State also starts the service through activation when it is installed.
        state = await get_property(bus, "State")
        print(remote_format.signal_line("StateChanged", [state], args.json), flush=True)
        await gone
        print("sottovoce: the service left the bus", file=sys.stderr)
        return EXIT_NO_SERVICE

    try:
        return _run(session)
    except KeyboardInterrupt:   # Ctrl-C is how `watch` is meant to end
        return EXIT_OK


async def call_bus(bus: MessageBus, member: str, signature: str, body: list[Any]) -> list[Any]:
    """Call a method of the bus daemon itself."""
    reply = await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member=member, signature=signature, body=body))
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        _raise_for(reply)
    return list(reply.body)


# ------------------------------------------------- for `kb status` and `ask`
def _if_running(work: Callable[[MessageBus], Awaitable[T]], timeout: float) -> T | None:
    """``work`` on a bus where the service runs; None when it is not on the bus. Never starts
    it through activation: a cold start would be slower than doing the work in-process."""
    async def main() -> T | None:
        try:
            bus = await connect_session_bus()
        except SottovoceError:
            return None
        try:
            if not await has_owner(bus):
                return None
            return await asyncio.wait_for(work(bus), timeout)
        except ServiceAbsent:
            return None
        except asyncio.TimeoutError:
            raise SottovoceError(f"the service did not answer within {timeout:.0f} s; "
                                 "see `journalctl --user -u sottovoce`") from None
        finally:
            bus.disconnect()

    return asyncio.run(main())


def remote_kb_status(timeout: float = 10.0) -> dict[str, Any] | None:
    """The running service's KnowledgeBase property; None when it is not running."""
    return _if_running(lambda bus: get_property(bus, "KnowledgeBase", autostart=False), timeout)


def remote_ask(text: str, timeout: float = 120.0) -> tuple[str, list[str], dict[str, float]] | None:
    """Ask the running service: its reply, sources and the reply's timings (LastTimings, set
    before Ask returns); None when it is not on the bus (then ask in-process). Raises
    SottovoceError when the service refuses the question."""
    async def ask(bus: MessageBus) -> tuple[str, list[str], dict[str, float]]:
        reply, sources = await call(bus, "Ask", "s", [text], autostart=False)
        try:
            timings = await get_property(bus, "LastTimings")
        except SottovoceError:      # a service of an older version, still running
            timings = {}
        return str(reply), [str(s) for s in sources], {str(k): float(v) for k, v in timings.items()}

    return _if_running(ask, timeout)


# ---------------------------------------------------------------------- register
def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the D-Bus subcommands to `sottovoce`."""
    p = sub.add_parser("status", help="show what the running service is doing",
                       description="Show the running service's state, emotion, last exchange, "
                       "knowledge base and models.")
    p.add_argument("--json", action="store_true", help="print the properties as JSON")
    p.set_defaults(handler=cmd_status)
    for name, member, done, text in (
            ("pause", "Pause", "paused", "stop listening to the microphone"),
            ("resume", "Resume", "listening", "listen to the microphone again")):
        sub.add_parser(name, help=text, description=f"Tell the running service to {text}.") \
            .set_defaults(handler=_simple(member, done))
    sub.add_parser("reload", help="re-read the configuration file",
                   description="Tell the running service to re-read the configuration file.") \
        .set_defaults(handler=cmd_reload)
    sub.add_parser("interrupt", help="stop the current reply at once",
                   description="Tell the running service to stop the current reply at once.") \
        .set_defaults(handler=cmd_interrupt)
    p = sub.add_parser("emotion", help="set the emotional style of the replies",
                       description="Set the emotional style of the running service's replies.")
    p.add_argument("name", help="a style from the config (neutral, cheerful, empathetic, ...)")
    p.add_argument("intensity", nargs="?",
                   help="0 to 1 (default: keep the current intensity)")
    p.set_defaults(handler=cmd_emotion)
    p = sub.add_parser("say", help="speak the given text through the service",
                       description="Have the running service say the text, as given, on its speaker.")
    p.add_argument("text", nargs="+", help="what to say")
    p.set_defaults(handler=cmd_say)
    p = sub.add_parser("reindex", help="rebuild the knowledge-base index now",
                       description="Have the running service rebuild its knowledge-base index now.")
    p.add_argument("--json", action="store_true", help="print the index summary as JSON")
    p.set_defaults(handler=cmd_reindex)
    p = sub.add_parser("watch", help="follow the service's signals live (Ctrl-C to stop)",
                       description="Print the running service's signals as they come (Ctrl-C to stop).")
    p.add_argument("--json", action="store_true", help="one JSON object per signal")
    p.set_defaults(handler=cmd_watch)
