"""sd_notify for ``Type=notify`` units, without a hard dependency on systemd-python.

systemd tells the service where to report through ``NOTIFY_SOCKET`` (a path, or an abstract
socket name starting with ``@``) and how often to ping the watchdog through ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``, the process meant). Outside systemd none of these are set and every
call here does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Callable, Mapping

_LOGGER = logging.getLogger(__name__)

Sender = Callable[[str], bool]


def _systemd_sender() -> Sender | None:
    try:
        from systemd import daemon as sd_daemon  # optional: the `systemd` extra
    except ImportError:
        return None
    return lambda state: bool(sd_daemon.notify(state))


def socket_notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one sd_notify datagram to ``NOTIFY_SOCKET``; False when there is nowhere to send."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]   # Linux abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode("utf-8"), address)
        except OSError as exc:
            _LOGGER.debug("sd_notify to %s failed: %s", address, exc)
            return False
    return True


class Notifier:
    """Reports the service's life to systemd: ready, status lines, watchdog pings, stopping.

    ``sender`` sends one notification string; by default systemd-python's
    ``systemd.daemon.notify`` when installed, else a small datagram-socket implementation.
    """

    def __init__(self, sender: Sender | None = None, env: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if env is None else env
        if sender is None:
            # systemd-python reads the real environment, so it only serves the default one.
            sender = (_systemd_sender() if env is None else None) or (
                lambda state: socket_notify(state, self._env))
        self._send = sender

    @property
    def enabled(self) -> bool:
        """True when systemd is listening (``NOTIFY_SOCKET`` is set)."""
        return bool(self._env.get("NOTIFY_SOCKET"))

    def notify(self, state: str) -> bool:
        """Send a raw sd_notify state ("KEY=value" lines); a no-op outside systemd."""
        if not self.enabled:
            return False
        return self._send(state)

    def ready(self) -> bool:
        """Every model is loaded and the service answers: systemd marks the unit started."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl --user status sottovoce``."""
        return self.notify("STATUS=" + " ".join(text.split()))

    def stopping(self) -> bool:
        """The service is shutting down on purpose."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """One watchdog ping."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds systemd waits between pings before it kills the service, or None."""
        usec = self._env.get("WATCHDOG_USEC", "")
        pid = self._env.get("WATCHDOG_PID", "")
        if pid and pid != str(os.getpid()):
            return None   # meant for another process (e.g. we were forked)
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1_000_000 if value > 0 else None

    async def watchdog_loop(self) -> None:
        """Ping the watchdog at half its interval, from the event loop itself.

        Because the pings run as a task on the loop, a loop that hangs (a blocking call, a
        deadlock) stops pinging, and systemd restarts the service.
        """
        interval = self.watchdog_interval()
        if interval is None or not self.enabled:
            return
        _LOGGER.debug("watchdog: pinging every %.3f s", interval / 2)
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)
