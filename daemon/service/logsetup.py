"""Logging for the service: the journal with structured fields when there is one, else stderr."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

_LOGGER = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "sottovoced"
_STDERR_FORMAT = "%(levelname)s %(name)s: %(message)s"

# sd-daemon(3) priority prefixes: journald reads them from a stderr connected to it.
_PREFIX = {logging.DEBUG: "<7>", logging.INFO: "<6>", logging.WARNING: "<4>",
           logging.ERROR: "<3>", logging.CRITICAL: "<2>"}


class _PrefixFormatter(logging.Formatter):
    """Adds the ``<N>`` priority prefix journald understands on a plain stream."""

    def format(self, record: logging.LogRecord) -> str:
        return _PREFIX.get(record.levelno, "<6>") + super().format(record)


def journal_present() -> bool:
    """True when journald is reachable (its socket exists, or stderr is connected to it)."""
    return bool(os.environ.get("JOURNAL_STREAM")) or os.path.exists(JOURNAL_SOCKET)


def _journal_handler(sender: Callable[..., None] | None) -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler  # optional: the `systemd` extra
    except ImportError:
        return None
    kwargs = {"SYSLOG_IDENTIFIER": IDENTIFIER}
    if sender is not None:
        return JournalHandler(sender_function=sender, **kwargs)
    return JournalHandler(**kwargs)


# Libraries whose INFO lines read like failures: faiss.loader logs a ModuleNotFoundError for
# each CPU-specific build it tries before the one that loads.
QUIET_LIBRARIES = ("faiss.loader",)


def setup_logging(level: str = "INFO", sender: Callable[..., None] | None = None) -> logging.Handler:
    """Route the root logger to the journal (structured: PRIORITY, LOGGER, CODE_*, SYSLOG_IDENTIFIER
    and any ``extra=`` fields) when present, else to stderr; returns the handler installed.

    ``sender`` replaces ``systemd.journal.send`` (tests). Without journald, ``send`` drops
    messages silently, which is why stderr is the fallback.
    """
    handler: logging.Handler | None = None
    if journal_present() or sender is not None:
        handler = _journal_handler(sender)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        prefixed = bool(os.environ.get("JOURNAL_STREAM"))
        handler.setFormatter(_PrefixFormatter(_STDERR_FORMAT) if prefixed
                             else logging.Formatter(_STDERR_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    _LOGGER.debug("logging to %s", type(handler).__name__)
    return handler
