"""`sottovoce`: the command-line entry point. Subcommand groups live in sibling modules,
each exposing ``register(subparsers)``; a handler takes ``args`` and returns an exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from daemon import __version__
from daemon.errors import EXIT_BAD_ARG, EXIT_CONFIG, EXIT_FAILURE, SottovoceError

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
    _describe_subcommands(parser)
    _common_options_anywhere(parser)
    return parser


def _common_options_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept --config and -v after the subcommand too (`sottovoce ask hi --config F`)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            child.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                               help="config file (as before the command)")
            child.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="log progress to stderr")
            _common_options_anywhere(child)


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand without a description its one-line help as one, so that
    `sottovoce COMMAND --help` says what COMMAND does (nested groups too)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, child in action.choices.items():
            text = helps.get(name)
            if child.description is None and text:
                child.description = text[0].upper() + text[1:] + "."
            _describe_subcommands(child)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that words left over are reported by the subcommand
    they were given to (`sottovoce emotion calm 0.3 extra` shows emotion's usage, not the
    top-level one). Exits 2, as every argparse error does."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser that ``args`` went through (``parser`` itself if none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            child = action.choices.get(getattr(args, action.dest, None) or "")
            if child is not None:
                return chosen_parser(child, args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parse(parser, argv)
    empty = [f"--{name}" for name in ("config", "kb", "out", "wav") if getattr(args, name, None) == ""]
    if empty:
        print(f"sottovoce: {empty[0]} is empty: give a path", file=sys.stderr)
        return EXIT_BAD_ARG
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
