"""Waiting for a service that is still loading its models (just started, or started by
D-Bus activation): it refuses Ask, Say and Reindex with NotReady, and :func:`call_ready`
waits for it instead, saying so once on stderr. A service whose models could not be loaded
(State 'error', Problems 'startup') is not waited for: its start-up error is raised."""

from __future__ import annotations

import asyncio
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from dbus_fast import Message
from dbus_fast.aio import MessageBus

from daemon.cli.bus_calls import ServiceAbsent, answer, call, call_bus, error_class, get_property
from daemon.cli.bus_signals import OWNER_CHANGED_RULE, PROPERTIES_CHANGED_RULE, owner_changed, properties_changed
from daemon.errors import NotReadyError, SottovoceError

WAITING = "sottovoce: waiting for the service to finish starting ..."
READY_WAIT_S = 120.0         # longest a command waits for a service still loading its models
RECHECK_S = 2.0              # while waiting, State is read again this often (a missed signal)


async def call_ready(bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None,
                     *, autostart: bool = True, wait_s: float = READY_WAIT_S,
                     timeout: float | None = None) -> list[Any]:
    """:func:`call` for a method that needs the models loaded (Ask, Say, Reindex). While the
    service is still starting it answers NotReady: then say so once on stderr, follow its
    State until it has left 'starting' and call again, for up to ``wait_s`` seconds.
    ``timeout`` bounds each call itself (the answer, not the wait). A start that failed
    raises its own error (a missing model: ModelError, exit 6) at once."""
    try:
        return await answer(call(bus, member, signature, body, autostart=autostart), timeout)
    except NotReadyError:
        pass
    deadline = asyncio.get_running_loop().time() + wait_s
    async with _following_start(bus) as watch:
        state = await watch.state()         # not starting but failed: raised here, no waiting
        print(WAITING, file=sys.stderr, flush=True)
        while True:
            if state != "starting":
                try:
                    return await answer(call(bus, member, signature, body, autostart=False), timeout)
                except NotReadyError:   # 'error' for a lost device while the models still load
                    pass
            await watch.next_change(deadline, wait_s)
            state = await watch.state()


class _StartWatch:
    """The service's State and owner, followed while a command waits for it to be ready."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.changed = asyncio.Event()
        self.gone = False

    def on_message(self, msg: Message) -> None:
        owner = owner_changed(msg)
        if owner is not None:
            self.gone = self.gone or not owner
            self.changed.set()
        elif "State" in (properties_changed(msg) or {}):
            self.changed.set()

    async def state(self) -> str:
        """State now; a one-line error when the service left or could not load its models."""
        self.changed.clear()         # before reading: a change from now on wakes next_change
        try:
            if self.gone:
                raise ServiceAbsent("left the bus")
            state = str(await get_property(self.bus, "State", autostart=False))
            problems = dict(await get_property(self.bus, "Problems", autostart=False))
        except ServiceAbsent:
            raise SottovoceError("the service stopped before it finished starting; "
                                 "see `journalctl --user -u sottovoce`") from None
        if state == "error" and problems.get("startup"):
            raise startup_error(str(problems["startup"]))
        return state

    async def next_change(self, deadline: float, wait_s: float) -> None:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise NotReadyError(f"the service was still starting after {wait_s:.0f} s; see "
                                "`journalctl --user -u sottovoce` (or try again later)")
        try:
            await asyncio.wait_for(self.changed.wait(), min(left, RECHECK_S))
        except asyncio.TimeoutError:
            pass


def startup_error(problem: str) -> SottovoceError:
    """The error of a start that could not load the models, from its Problems entry
    ("Model: STT model ... does not exist"): of the class its code names."""
    code = problem.partition(": ")[0]
    return error_class(code)(f"the service could not start: {problem}; once that is fixed, "
                             "`sottovoce reload` starts it (see `journalctl --user -u sottovoce`)")


@asynccontextmanager
async def _following_start(bus: MessageBus) -> AsyncIterator[_StartWatch]:
    watch = _StartWatch(bus)
    rules = [PROPERTIES_CHANGED_RULE, OWNER_CHANGED_RULE]
    bus.add_message_handler(watch.on_message)
    try:
        for rule in rules:
            await call_bus(bus, "AddMatch", "s", [rule])
        yield watch
    finally:
        bus.remove_message_handler(watch.on_message)
        for rule in rules:
            try:
                await call_bus(bus, "RemoveMatch", "s", [rule])
            except Exception:   # the connection may be gone: its rules went with it
                pass
