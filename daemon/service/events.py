"""A tiny publish/subscribe hub for service events, delivered on the event loop."""

from __future__ import annotations

import logging
from typing import Callable

from daemon.messages import ServiceEvent

_LOGGER = logging.getLogger(__name__)
Listener = Callable[[ServiceEvent], None]


class EventHub:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, callback: Listener) -> Callable[[], None]:
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def publish(self, event: ServiceEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one bad listener must not starve the others
                _LOGGER.exception("event listener failed on %r", event)
