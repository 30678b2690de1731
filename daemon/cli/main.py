"""`sottovoce`: the command-line entry point. Subcommand groups live in sibling modules,
each exposing ``register(subparsers)``; a handler takes ``args`` and returns an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from daemon import __version__
from daemon.errors import EXIT_CONFIG, EXIT_FAILURE, SottovoceError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from daemon.cli import groups

    parser = argparse.ArgumentParser(
        prog="sottovoce",
        description="Sottovoce: a local, always-on voice assistant. Most commands talk to the "
        "running service (sottovoced) over D-Bus; `ask --local`, `transcribe`, `speak`, "
        "`kb` and `config` work without it.",
    )
    parser.add_argument("--version", action="version", version=f"sottovoce {__version__}")
    parser.add_argument("--config", metavar="PATH", help="config file overriding config/default.yaml "
                        "(default: ~/.config/sottovoce/config.yaml when it exists)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in groups.REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return handler(args)
    except SottovoceError as exc:
        print(f"sottovoce: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
