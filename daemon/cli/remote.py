"""`sottovoce status | pause | resume | interrupt | emotion | say | reindex | reload | watch`:
commands that talk to the running service over D-Bus (``ask`` lives in :mod:`daemon.cli.local`
and reaches the service through :func:`remote_ask`; ``kb`` uses :func:`remote_kb_status` and
:func:`remote_reindex`).

Ask, Say and Reindex wait for a service still loading its models
(:mod:`daemon.cli.remote_wait`); the calls themselves are in :mod:`daemon.cli.bus_calls`.
`watch` follows the service across restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any, Awaitable, Callable, TypeVar

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from daemon.cli import remote_format
from daemon.cli.bus_calls import (
    BusUnreachable, ServiceAbsent, answer, call, call_bus, get_all, get_property, has_owner, unwrap,
)
from daemon.cli.bus_signals import OWNER_CHANGED_RULE, PROPERTIES_CHANGED_RULE, owner_changed, properties_changed
from daemon.cli.remote_wait import READY_WAIT_S, call_ready
from daemon.errors import (
    EXIT_NO_SERVICE, EXIT_OK, BadArgumentError, KnowledgeBaseError, ReplyNotSpokenError, SottovoceError,
)
from daemon.service.dbus_service import BUS_NAME, OBJECT_PATH, connect_session_bus

T = TypeVar("T")
_LOGGER = logging.getLogger(__name__)

NOT_RUNNING = ("sottovoce: the service is not running; start it with "
               "`systemctl --user start sottovoce` or `sottovoced`")


# ------------------------------------------------------------------ D-Bus plumbing
def _run(session: Callable[[MessageBus], Awaitable[int]]) -> int:
    """Connect, run ``session``, disconnect; the one-line hint when the service is absent.
    No usable bus (a bad DBUS_SESSION_BUS_ADDRESS, no session bus) is said as such, with the
    reason (same exit code: the service cannot be reached either way)."""
    async def main() -> int:
        try:
            bus = await connect_session_bus()
        except SottovoceError as exc:
            raise BusUnreachable(str(exc)) from None
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
                print(f"{done}, but the state is error: " + remote_format.printable_text(
                      "; ".join(f"{what}: {why}" for what, why in sorted(problems.items()))))
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
            print(remote_format.printable_text(note))
        return EXIT_OK
    return _run(session)


def cmd_interrupt(args: argparse.Namespace) -> int:
    async def session(bus: MessageBus) -> int:
        state = str(await get_property(bus, "State"))
        await call(bus, "Interrupt")     # harmless when idle; the state may change meanwhile
        print("interrupted" if state in ("thinking", "speaking")
              else f"nothing to interrupt (the service was {remote_format.printable_text(state)})")
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
        await call_ready(bus, "Say", "s", [" ".join(args.text)])
        return EXIT_OK
    return _run(session)


def cmd_reindex(args: argparse.Namespace) -> int:
    """Reindex, then the summary; a folder missing or not a folder is a KnowledgeBaseError
    (exit 7, as `kb search` and `ask --kb` give), not a summary of nothing."""
    async def session(bus: MessageBus) -> int:
        await call_ready(bus, "Reindex")
        kb = (await get_all(bus))["KnowledgeBase"]
        check_folder_indexed(kb)
        print(json.dumps(kb) if args.json else remote_format.kb_text(kb))
        return EXIT_OK
    return _run(session)


def check_folder_indexed(kb: dict[str, Any]) -> None:
    """KnowledgeBaseError when the service's KnowledgeBase property says its folder itself
    could not be indexed (``failed["."]``: missing, or not a folder)."""
    reason = dict(kb.get("failed", {})).get(".")
    if reason:
        raise KnowledgeBaseError(
            f"the service's knowledge base: {remote_format.printable_text(str(reason))}; create the folder "
            "or point rag.knowledge_base at one (the service picks it up when it appears)")


def cmd_watch(args: argparse.Namespace) -> int:
    """Print signals until Ctrl-C. When the service leaves the bus (stopped, restarted by
    systemd) say so and wait; when it is back, print its state again and go on. With
    --exit-when-gone, end (code 3) when it leaves instead."""
    async def session(bus: MessageBus) -> int:
        owners: asyncio.Queue[str] = asyncio.Queue()    # the name's new owner, "" when it left
        printed = [""]                      # the last line printed

        def on_message(msg: Message) -> None:
            owner = owner_changed(msg)
            if owner is not None:
                owners.put_nowait(owner)
                return
            if msg.message_type != MessageType.SIGNAL or msg.path != OBJECT_PATH:
                return
            line = remote_format.signal_line(msg.member, unwrap(msg.body), args.json)
            if line and not (line == printed[-1] and line.startswith("knowledge base: ")):
                print(line, flush=True)     # (the summary is announced again with IndexUpdated)
                printed[-1] = line

        bus.add_message_handler(on_message)
        for rule in (f"type='signal',sender='{BUS_NAME}',path='{OBJECT_PATH}'", OWNER_CHANGED_RULE):
            await call_bus(bus, "AddMatch", "s", [rule])
        # Reading State also starts the service through activation when it is installed.
        state = await get_property(bus, "State")
        print(remote_format.signal_line("StateChanged", [state], args.json), flush=True)
        # The owner now: its arrival (by activation, just now) is then no news.
        return await _follow_owners(bus, owners, await _owner(bus), args, printed)

    try:
        return _run(session)
    except KeyboardInterrupt:   # Ctrl-C is how `watch` is meant to end
        return EXIT_OK


async def _follow_owners(bus: MessageBus, owners: asyncio.Queue[str], owner: str,
                         args: argparse.Namespace, printed: list[str]) -> int:
    """`watch` as the service comes and goes: say when it leaves the bus and when it is back
    (then print its state again); with --exit-when-gone, end when it leaves."""
    while True:
        new = await owners.get()
        if new == owner:
            continue
        owner = new
        if not owner:
            if args.exit_when_gone:
                print("sottovoce: the service left the bus", file=sys.stderr)
                return EXIT_NO_SERVICE
            print("sottovoce: the service left the bus; waiting for it to come back "
                  "(Ctrl-C to stop)", file=sys.stderr, flush=True)
            continue
        printed[-1] = ""
        try:
            state = await get_property(bus, "State", autostart=False)
        except (ServiceAbsent, SottovoceError):     # gone again: its NameOwnerChanged follows
            continue
        print("sottovoce: the service is back on the bus", file=sys.stderr, flush=True)
        print(remote_format.signal_line("StateChanged", [state], args.json), flush=True)


async def _owner(bus: MessageBus) -> str:
    """The unique name owning BUS_NAME now; "" when nobody does."""
    try:
        (owner,) = await call_bus(bus, "GetNameOwner", "s", [BUS_NAME])
    except (ServiceAbsent, SottovoceError):
        return ""
    return str(owner)


# ------------------------------------------------- for `kb status` and `ask`
def _if_running(work: Callable[[MessageBus], Awaitable[T]], timeout: float | None) -> T | None:
    """``work`` on a bus where the service runs; None when it is not on the bus. Never starts
    it through activation: a cold start would be slower than doing the work in-process.
    ``timeout`` bounds the whole of ``work`` (None: ``work`` bounds its own steps)."""
    async def main() -> T | None:
        try:
            bus = await connect_session_bus()
        except SottovoceError as exc:
            _LOGGER.info("%s; working in this process", exc)
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
    """The running service's KnowledgeBase property; None when it is not running. Its
    ``folder`` and ``index_dir`` say which folder and index it uses (missing from an older
    service; ``index_dir`` is "" until its knowledge base is set up)."""
    return _if_running(lambda bus: get_property(bus, "KnowledgeBase", autostart=False), timeout)


def remote_problems(timeout: float = 10.0) -> dict[str, str] | None:
    """The running service's Problems property (``startup``: its models could not be loaded);
    None when it is not running."""
    async def problems(bus: MessageBus) -> dict[str, str]:
        found = await get_property(bus, "Problems", autostart=False)
        return {str(k): str(v) for k, v in dict(found).items()}

    return _if_running(problems, timeout)


def remote_reindex(on_progress: Callable[[str], None],
                   wait_s: float = READY_WAIT_S) -> dict[str, Any] | None:
    """Have the running service rebuild its index (Reindex), passing each new ``indexing``
    line of its KnowledgeBase property to ``on_progress``; the property once done. None when
    it is not on the bus (it is never started for this)."""
    async def reindex(bus: MessageBus) -> dict[str, Any]:
        last = [""]

        def on_message(msg: Message) -> None:
            changed = properties_changed(msg) or {}
            if "KnowledgeBase" in changed:
                line = str(unwrap(changed["KnowledgeBase"]).get("indexing", ""))
                if line and line != last[0]:
                    on_progress(line)
                last[0] = line

        bus.add_message_handler(on_message)
        await call_bus(bus, "AddMatch", "s", [PROPERTIES_CHANGED_RULE])
        await call_ready(bus, "Reindex", autostart=False, wait_s=wait_s)
        return dict(await get_property(bus, "KnowledgeBase", autostart=False))

    return _if_running(reindex, None)


def remote_ask(text: str, timeout: float = 120.0,
               wait_s: float = READY_WAIT_S) -> tuple[str, list[str], dict[str, float]] | None:
    """Ask the running service: its reply, sources and the reply's timings (LastTimings, set
    before Ask returns); None when it is not on the bus (then ask in-process). A service still
    starting is waited for, up to ``wait_s`` (see :func:`call_ready`); ``timeout`` bounds the
    answer itself. Raises SottovoceError when the service refuses the question. A service with
    no speaker still answers, unheard: ReplyNotSpokenError (exit 11, as `say` there) then
    carries the reply and its sources."""
    async def ask(bus: MessageBus) -> tuple[str, list[str], dict[str, float]]:
        reply, sources = await call_ready(bus, "Ask", "s", [text], autostart=False, wait_s=wait_s,
                                          timeout=timeout)
        try:
            timings = await answer(get_property(bus, "LastTimings", autostart=False), timeout)
        except SottovoceError:      # a service of an older version, still running
            timings = {}
        problems = await answer(get_property(bus, "Problems", autostart=False), timeout)
        speaker = dict(problems).get("speaker", "")
        if speaker:
            raise ReplyNotSpokenError(f"the reply was not spoken: {speaker}", str(reply),
                                      [str(s) for s in sources])
        return str(reply), [str(s) for s in sources], {str(k): float(v) for k, v in timings.items()}

    return _if_running(ask, None)


# ---------------------------------------------------------------------- register
# Why --config means nothing to these commands (see daemon.cli.main.config_refusal).
SERVICE_OWN_CONFIG = "the running service has its own config file"
RELOAD_OWN_CONFIG = "the service re-reads its own file"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the D-Bus subcommands to `sottovoce`."""
    p = sub.add_parser("status", help="show what the running service is doing",
                       description="Show the running service's state, emotion, last exchange, "
                       "knowledge base and models.")
    p.add_argument("--json", action="store_true", help="print the properties as JSON")
    p.set_defaults(handler=cmd_status, config_unused=SERVICE_OWN_CONFIG)
    for name, member, done, text in (
            ("pause", "Pause", "paused", "stop listening to the microphone"),
            ("resume", "Resume", "listening", "listen to the microphone again")):
        sub.add_parser(name, help=text, description=f"Tell the running service to {text}.") \
            .set_defaults(handler=_simple(member, done), config_unused=SERVICE_OWN_CONFIG)
    sub.add_parser("reload", help="re-read the configuration file",
                   description="Tell the running service to re-read its configuration file (the "
                   "one it was started with).") \
        .set_defaults(handler=cmd_reload, config_unused=RELOAD_OWN_CONFIG)
    sub.add_parser("interrupt", help="stop the current reply at once",
                   description="Tell the running service to stop the current reply at once.") \
        .set_defaults(handler=cmd_interrupt, config_unused=SERVICE_OWN_CONFIG)
    p = sub.add_parser("emotion", help="set the emotional style of the replies",
                       description="Set the emotional style of the running service's replies.")
    p.add_argument("name", help="a style from the config (neutral, cheerful, empathetic, ...)")
    p.add_argument("intensity", nargs="?",
                   help="0 to 1 (default: keep the current intensity)")
    p.set_defaults(handler=cmd_emotion, config_unused=SERVICE_OWN_CONFIG)
    p = sub.add_parser("say", help="speak the given text through the service",
                       description="Have the running service say the text, as given, on its speaker "
                       "(a service still starting is waited for).")
    p.add_argument("text", nargs="+", help="what to say")
    p.set_defaults(handler=cmd_say, config_unused=SERVICE_OWN_CONFIG)
    p = sub.add_parser("reindex", help="rebuild the knowledge-base index now",
                       description="Have the running service rebuild its knowledge-base index now "
                       "(a service still starting is waited for).")
    p.add_argument("--json", action="store_true", help="print the index summary as JSON")
    p.set_defaults(handler=cmd_reindex, config_unused=SERVICE_OWN_CONFIG)
    p = sub.add_parser("watch", help="follow the service's signals live (Ctrl-C to stop)",
                       description="Print the running service's signals as they come (Ctrl-C to stop). "
                       "When the service leaves the bus (stopped, or restarted by systemd) `watch` says "
                       "so on stderr and waits for it; once it is back, it prints its state again and "
                       "goes on.")
    p.add_argument("--json", action="store_true", help="one JSON object per signal")
    p.add_argument("--exit-when-gone", action="store_true",
                   help="end (exit code 3) when the service leaves the bus instead of waiting for it")
    p.set_defaults(handler=cmd_watch, config_unused=SERVICE_OWN_CONFIG)
