"""``sottovoce-tray``: the tray icon of the Sottovoce service (a pure D-Bus client).

pystray (GTK backend) owns the main thread; :class:`~tray.client.AssistantClient` follows the
service from its own thread. The tray never owns anything the service needs: quitting it,
or it failing, leaves the service running.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from daemon.config import DEFAULT_CONFIG, Config, load_config, user_config_path
from daemon.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from tray import icons
from tray.client import AssistantClient, ServiceView
from tray.menu import build_menu, to_pystray, tooltip

_LOGGER = logging.getLogger(__name__)

PROGRAM = "sottovoce-tray"
CONFIG_RECHECK_S = 2     # while the config file is invalid, how often it is looked at again

_TEMPLATE_HEADER = """\
# Sottovoce: your settings. Every key below is commented out and shows its default;
# uncomment a key (and its section line) to change it. Keys you leave out keep the default.
# Apply changes with `sottovoce reload` (or restart the service).
# Relative paths are resolved against this file's folder.

"""


def config_template() -> str:
    """The default configuration, every setting commented out, for a new user file."""
    lines = [_TEMPLATE_HEADER]
    body = DEFAULT_CONFIG.read_text(encoding="utf-8").splitlines(keepends=True)
    while body and (body[0].startswith("#") or not body[0].strip()):
        body.pop(0)  # the default file's own header speaks about itself
    for line in body:
        if "knowledge_base:" in line and "../knowledge_base" in line:
            # Relative to the default file's folder there, not to the user's folder here.
            kb = (DEFAULT_CONFIG.parent / "../knowledge_base").resolve()
            line = line.replace("../knowledge_base", str(kb))
        # Settings and indented notes are commented out; whole-line comments stay as they are.
        lines.append(line if not line.strip() or line.startswith("#") else "# " + line)
    return "".join(lines)


def ensure_user_config(path: Path) -> bool:
    """Create ``path`` from :func:`config_template` when it is missing; True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_template(), encoding="utf-8")
    _LOGGER.info("created %s from the commented template", path)
    return True


def open_in_editor(path: Path, opener: Sequence[str] = ("xdg-open",)) -> str | None:
    """Open ``path`` with the desktop's default application, without waiting for it.

    Returns None on success, else one line saying why it could not be opened.
    """
    program = shutil.which(opener[0])
    if program is None:
        return f"{opener[0]} is not installed: open {path} in a text editor"
    try:
        subprocess.Popen([program, *opener[1:], str(path)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError as exc:
        return f"cannot run {opener[0]} ({exc}): open {path} in a text editor"
    return None


class TrayApp:
    """The icon, its menu, and the actions behind them (see :class:`tray.menu.TrayActions`).

    ``config_problem``: why the config file could not be read (the tray then runs with the
    default emotion styles). Until the file is fixed the icon shows 'error', the tooltip says
    why and a notification did at start; the file is looked at again while it stays invalid.
    """

    def __init__(self, pystray: Any, emotions: Sequence[str], config_file: Path,
                 bus_address: str | None = None, *, config_problem: str = "") -> None:
        self._pystray = pystray
        self._emotions = tuple(emotions)
        self._config_file = config_file
        self._config_problem = config_problem
        self._config_stamp = _stamp(config_file)
        self._images = {state: icons.render(state) for state in icons.ICON_STATES}
        self._shown = "offline"
        self._reindex_asked = False
        self._client = AssistantClient(self._on_change, self._on_error, self._on_index_updated,
                                       self.quit, bus_address=bus_address)
        self._icon = pystray.Icon(PROGRAM, self._images["offline"], tooltip(ServiceView()),
                                  menu=pystray.Menu(self._menu_items))

    def run(self) -> int:
        """Show the icon and run the GTK loop until Quit or SIGTERM (blocks; main thread)."""
        from gi.repository import GLib

        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self._on_signal)
        try:
            self._icon.run(setup=self._setup)
        except GLib.Error as exc:
            # pystray withdraws its notification on the way out; with no notification
            # daemon (or the session bus already gone) that fails, and nothing is lost.
            _LOGGER.debug("while closing the icon: %s", exc)
        finally:
            self._client.stop()
        return EXIT_OK

    # --- TrayActions (called on the GTK thread by menu items) -----------------------------
    def pause(self) -> None:
        self._client.pause()

    def resume(self) -> None:
        self._client.resume()

    def interrupt(self) -> None:
        self._client.interrupt()

    def set_emotion(self, name: str, intensity: float) -> None:
        self._client.set_emotion(name, intensity)

    def reindex(self) -> None:
        self._reindex_asked = True
        self._client.reindex()

    def open_config(self) -> None:
        try:
            ensure_user_config(self._config_file)
        except OSError as exc:
            self._client.notify("Sottovoce: cannot create the config file", f"{self._config_file}: {exc}")
            return
        problem = open_in_editor(self._config_file)
        if problem:
            self._client.notify("Sottovoce: cannot open the config file", problem)

    def quit(self) -> None:
        _LOGGER.info("quitting the tray (the service keeps running)")
        self._icon.stop()

    # --- internals ---------------------------------------------------------------------
    def _setup(self, icon: Any) -> None:
        icon.visible = True
        self._set_tooltip(self._tooltip(self._client.view))
        self._client.start()
        if self._config_problem:
            from gi.repository import GLib

            _LOGGER.warning("%s; using the default emotion styles until it is fixed", self._config_problem)
            self._client.notify("Sottovoce: the config file is invalid",
                                f"{self._config_problem}. The tray uses the default emotion styles "
                                "until it is fixed; the service keeps the configuration it runs with.",
                                "dialog-error")
            GLib.timeout_add_seconds(CONFIG_RECHECK_S, self._recheck_config)

    def _recheck_config(self) -> bool:
        """GLib timer while the config is invalid: read it again once it changed; False (the
        timer ends) once it loads."""
        stamp = _stamp(self._config_file)
        if stamp == self._config_stamp:
            return True
        self._config_stamp = stamp
        try:
            config = load_config(self._config_file)
        except ConfigError as exc:
            self._config_problem = str(exc)
            _LOGGER.warning("the config file is still invalid: %s", exc)
            self._show(self._client.view)
            return True
        _LOGGER.info("the config file is valid again")
        self._config_problem = ""
        self._emotions = emotion_names(config)
        self._show(self._client.view)
        return False

    def _on_signal(self) -> bool:
        self.quit()
        return False

    def _menu_items(self) -> list[Any]:
        return to_pystray(build_menu(self._client.view, self._emotions, self), self._pystray)

    def _on_change(self, view: ServiceView) -> None:
        _LOGGER.debug("view: %r", view)
        self._show(view)

    def _show(self, view: ServiceView) -> None:
        shown = icons.icon_state(view.state, view.online)
        if self._config_problem and view.online:
            shown = "error"         # the service runs, but the file it would reload is broken
        if shown != self._shown:
            self._shown = shown
            self._icon.icon = self._images[shown]
            _LOGGER.info("icon: %s", shown)
        self._set_tooltip(self._tooltip(view))
        self._icon.update_menu()

    def _tooltip(self, view: ServiceView) -> str:
        text = tooltip(view)
        return text + f"\nProblem: config file: {self._config_problem}" if self._config_problem else text

    def _set_tooltip(self, text: str) -> None:
        self._icon.title = text
        # pystray gives the GTK status icon a title (read by screen readers) but no tooltip.
        status_icon = getattr(self._icon, "_status_icon", None)
        if status_icon is not None:
            from gi.repository import GLib

            GLib.idle_add(status_icon.set_tooltip_text, text)

    def _on_error(self, code: str, message: str) -> None:
        _LOGGER.warning("service error %s: %s", code, message)
        self._client.notify(f"Sottovoce: {code}", message, "dialog-error")

    def _on_index_updated(self, documents: int, chunks: int) -> None:
        # Only answer the menu's own Reindex: live updates from the file watcher stay quiet.
        if self._reindex_asked:
            self._reindex_asked = False
            self._client.notify("Sottovoce: knowledge base reindexed",
                                f"{documents} documents, {chunks} chunks", "dialog-information")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Tray icon for the Sottovoce voice assistant: shows its state and offers "
                    "pause/resume, interrupt, emotion, reindex. Talks to the service over the "
                    "session D-Bus; quitting the tray leaves the service running.")
    parser.add_argument("--config", metavar="PATH",
                        help=f"config file (default: {user_config_path()}); emotion names come "
                             "from it and 'Open config file' opens it")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _import_pystray() -> Any:
    os.environ.setdefault("PYSTRAY_BACKEND", "gtk")
    from gi.repository import GLib

    GLib.set_prgname(PROGRAM)  # the X window class, so the icon can be told apart
    import pystray

    return pystray


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sottovoce-tray``; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"{PROGRAM}: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tray").setLevel(args.log_level)  # DEBUG for the tray, not its libraries
    if not os.environ.get("DISPLAY"):
        print(f"{PROGRAM}: no display (DISPLAY is not set): start it inside a graphical session, "
              "e.g. from the desktop's autostart or systemd/sottovoce-tray.service",
              file=sys.stderr)
        return EXIT_CONFIG
    problem = ""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        # Only the emotion names come from it: start with the defaults and show what is wrong
        # (exiting would only restart-loop under systemd while the file is being edited).
        problem = str(exc)
        config = load_config(use_user_file=False)
    config_file = Path(args.config).expanduser() if args.config else user_config_path()
    try:
        pystray = _import_pystray()
    except Exception as exc:  # GTK raises several kinds when the display cannot be opened
        print(f"{PROGRAM}: cannot use the display {os.environ['DISPLAY']!r} ({exc}): "
              "check that the X server is running", file=sys.stderr)
        return EXIT_CONFIG
    return TrayApp(pystray, emotion_names(config), config_file, config_problem=problem).run()


def emotion_names(config: Config) -> tuple[str, ...]:
    """The styles the Emotion submenu offers."""
    return tuple(config.emotion.styles) or (config.emotion.default,)


def _stamp(path: Path) -> tuple[int, int] | None:
    """When ``path`` was last changed, and its size (None when it cannot be read)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


if __name__ == "__main__":
    sys.exit(main())
