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
                        "(default: ~/.config/sottovoce/config.yaml when it exists); commands that only "
                        "talk to the running service refuse it: it has its own")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in groups.REGISTRARS:
        register(sub)
    _describe_subcommands(parser)
    _common_options_anywhere(parser)
    return parser


def _common_options_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept --config and -v after the subcommand too (`sottovoce ask hi --config F`). A
    command that only talks to the running service (``config_unused`` set) does not list
    --config in its help; it still takes it, to refuse it in one line (:func:`config_refusal`)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in action.choices.values():
            unused = child.get_default("config_unused")
            child.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                               help=argparse.SUPPRESS if unused else "config file (as before the command)")
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


# Arguments that name files or folders: Linux allows any bytes in a path, so they need not be
# UTF-8 (the code that opens them deals with such names); every other text must be.
_PATH_ARGUMENTS = frozenset({"config", "kb", "out", "wav", "file", "dest"})


def not_utf8(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """One line naming the first text argument that is not valid UTF-8 (bytes of another
    encoding arrive as lone surrogates, which cannot be encoded); None when all are."""
    chosen = chosen_parser(parser, args)
    command = chosen.prog.removeprefix(f"{parser.prog} ")
    for dest, value in vars(args).items():
        if dest in _PATH_ARGUMENTS:
            continue
        for text in value if isinstance(value, list) else [value]:
            bad = _first_unencodable(text) if isinstance(text, str) else None
            if bad is not None:
                return (f"{command}: {_argument_name(chosen, dest)} is not valid UTF-8 "
                        f"({bad}); check your terminal's encoding (LANG, LC_ALL)")
    return None


def _first_unencodable(text: str) -> str | None:
    """'byte 0xe9' for the first character of ``text`` that UTF-8 cannot encode; None if none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        # surrogateescape keeps an undecodable byte B as U+DC00+B.
        return f"byte {code - 0xDC00:#04x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
    return None


def _argument_name(parser: argparse.ArgumentParser, dest: str) -> str:
    """The argument stored in ``dest``, as ``parser``'s usage names it ("--emotion", "the query")."""
    for action in parser._actions:
        if action.dest == dest:
            if action.option_strings:
                return max(action.option_strings, key=len)
            return f"the {str(action.metavar or dest).lower()}"
    return f"the {dest}"


def config_refusal(args: argparse.Namespace) -> str | None:
    """One line when --config was given to a command that only talks to the running service
    (its ``config_unused`` says why it is not used); None otherwise."""
    unused = getattr(args, "config_unused", None)
    if not unused or getattr(args, "config", None) is None:
        return None
    return f"--config is not used by {args.command}: {unused}; restart it with --config to change it"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parse(parser, argv)
    bad_text = not_utf8(parser, args)
    if bad_text:
        print(f"sottovoce: {bad_text}", file=sys.stderr)
        return EXIT_BAD_ARG
    refusal = config_refusal(args)
    if refusal:
        print(f"sottovoce: {refusal}", file=sys.stderr)
        return EXIT_CONFIG
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
