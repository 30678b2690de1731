"""`sottovoce install-service [--config PATH] [--uninstall]`: the systemd user units and the
D-Bus activation file, installed for the current user with the real path of the installed
programs (and ``--config PATH``, absolute, on the command line of the service and the tray)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from daemon.errors import EXIT_OK, SottovoceError

ROOT = Path(__file__).resolve().parents[2]        # the source tree holding systemd/ and dbus/
UNITS = ("sottovoce.service", "sottovoce-tray.service")
ACTIVATION = "org.sottovoce.Assistant.service"
# Folders the sandboxed unit may write to (ReadWritePaths= needs them to exist).
STATE_DIRS = (".local/share/sottovoce", ".local/state/sottovoce", ".cache/sottovoce")
# What the unit's PrivateTmp=yes hides from the service: a config there is not found.
PRIVATE_TMP = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Target:
    """One file to install: where its template is, where it goes, which program it runs."""

    source: Path
    dest: Path
    key: str          # "ExecStart" (units) or "Exec" (D-Bus activation)
    program: str


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def targets(env: Mapping[str, str] | None = None) -> list[Target]:
    """Where each file goes: $XDG_CONFIG_HOME/systemd/user and $XDG_DATA_HOME/dbus-1/services."""
    env = os.environ if env is None else env
    home = _home(env)
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    data = Path(env.get("XDG_DATA_HOME") or home / ".local/share")
    units = config / "systemd" / "user"
    return [
        Target(ROOT / "systemd" / UNITS[0], units / UNITS[0], "ExecStart", "sottovoced"),
        Target(ROOT / "systemd" / UNITS[1], units / UNITS[1], "ExecStart", "sottovoce-tray"),
        Target(ROOT / "dbus" / ACTIVATION, data / "dbus-1" / "services" / ACTIVATION, "Exec",
               "sottovoced"),
    ]


def find_program(name: str) -> Path:
    """The installed console script: next to this Python first (same venv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which(name)
    if found:
        return Path(found).absolute()
    raise SottovoceError(f"`{name}` is not installed next to {sys.executable} nor on PATH; "
                         "install the package first (`make setup` or `pip install .`)")


def render(template: str, key: str, program: Path, args: Sequence[str] = ()) -> str:
    """The template with the program of every ``key=`` line replaced by ``program``, followed
    by ``args`` (quoted for a unit's ExecStart= or, with key ``Exec``, a D-Bus service file)."""
    quote = shlex.quote if key == "Exec" else unit_word
    out = []
    for line in template.splitlines():
        if line.startswith(key + "="):
            _, _, rest = line[len(key) + 1:].partition(" ")
            line = " ".join([f"{key}={program}", *map(quote, args), *([rest] if rest else [])])
        out.append(line)
    return "\n".join(out) + "\n"


def unit_word(text: str) -> str:
    """``text`` as one argument of a systemd ExecStart=: its specifiers (%) and variables
    ($) escaped, and quoted when it holds spaces, quotes or backslashes."""
    text = text.replace("%", "%%").replace("$", "$$")
    if text and not any(ch.isspace() or ch in "\"'\\;" for ch in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_argument(path: str | None) -> list[str]:
    """``--config ABSOLUTE-PATH`` for the programs the units run ([] without ``path``). The
    file must load as the service would load it: a missing or invalid one is refused
    (ConfigError, exit 2) here rather than at each start of the service."""
    if path is None:
        return []
    from daemon.config import load_config

    config = Path(path).expanduser().absolute()
    load_config(config)
    hidden = next((d for d in PRIVATE_TMP if str(config).startswith(d + "/")), None)
    if hidden:
        print(f"sottovoce: note: {config} is under {hidden}, which the service does not see "
              "(its unit has PrivateTmp=yes); keep the file in your home", file=sys.stderr)
    return ["--config", str(config)]


def _user_manager_running(env: Mapping[str, str]) -> bool:
    runtime = env.get("XDG_RUNTIME_DIR", "")
    return bool(runtime) and Path(runtime, "systemd", "private").exists() \
        and shutil.which("systemctl") is not None


def _systemctl(*args: str) -> None:
    subprocess.run(["systemctl", "--user", *args], check=False)


def install(env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> list[Path]:
    """Write the units and the activation file, their programs run with ``args`` (see
    :func:`config_argument`); returns the paths written."""
    env = os.environ if env is None else env
    written = []
    for target in targets(env):
        if not target.source.is_file():
            raise SottovoceError(f"{target.source} is missing; run `sottovoce install-service` "
                                 "from a source checkout of Sottovoce (or `make install`)")
        text = render(target.source.read_text(encoding="utf-8"), target.key,
                      find_program(target.program), args)
        target.dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.dest.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target.dest)
        written.append(target.dest)
    for rel in STATE_DIRS:
        (_home(env) / rel).mkdir(parents=True, exist_ok=True)
    if _user_manager_running(env):
        _systemctl("daemon-reload")
    return written


def uninstall(env: Mapping[str, str] | None = None) -> list[Path]:
    """Stop and remove what :func:`install` wrote (the user's data stays); returns the paths removed."""
    env = os.environ if env is None else env
    if _user_manager_running(env):
        _systemctl("disable", "--now", *UNITS)
    removed = []
    for target in targets(env):
        if target.dest.exists():
            target.dest.unlink()
            removed.append(target.dest)
    if _user_manager_running(env):
        _systemctl("daemon-reload")
    return removed


def cmd_install_service(args: argparse.Namespace) -> int:
    if args.uninstall:
        for path in uninstall():
            print(f"removed {path}")
        return EXIT_OK
    for path in install(args=config_argument(getattr(args, "config", None))):
        print(f"wrote {path}")
    print("next: systemctl --user daemon-reload && systemctl --user enable --now sottovoce\n"
          "      (and, on a desktop, systemctl --user enable --now sottovoce-tray)")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `install-service` to `sottovoce`."""
    p = sub.add_parser("install-service",
                       help="install the systemd user units and D-Bus activation for this user",
                       description="Install the systemd user units and the D-Bus activation file "
                       "for this user. With --config PATH the service and the tray run with that "
                       "file (its absolute path is written into the units); it must exist and be valid.")
    p.add_argument("--uninstall", action="store_true",
                   help="stop, disable and remove them instead (your data stays)")
    p.set_defaults(handler=cmd_install_service)
