"""The tray applet: icons and menu logic without X, then the real tray against the real
``sottovoced`` on a virtual desktop (Xvfb + trayer + a private session bus).

Screenshots and logs land in tests/artifacts/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import configparser
import dataclasses
import itertools
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from dbus_fast import Variant

from daemon.config import Config, load_config
from daemon.errors import ConfigError
from tests.fixtures_dbus import ServiceProcess, make_service_home, start_sottovoced
from tests.fixtures_x11 import ARTIFACTS, ROOT, Desktop, program, stop_process, wait_for
from tray import icons
from tray.app import config_template, ensure_user_config, open_in_editor
from tray.client import ServiceView, apply_properties
from tray.menu import INTENSITY_LEVELS, Entry, build_menu, intensity_level, selectable, tooltip

EMOTIONS = ("neutral", "cheerful", "empathetic", "humorous", "calm", "serious")


class RecordingActions:
    """The menu's actions, recorded (the edge between the menu and the D-Bus client)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        if name not in ("pause", "resume", "interrupt", "set_emotion", "reindex", "open_config", "quit"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, *args))


def _item(entries: tuple[Entry, ...], prefix: str) -> Entry:
    return next(e for e in entries if e.text.startswith(prefix))


# ----------------------------------------------------------------------- without a display
def test_icons_differ_in_shape_at_22px() -> None:
    masks = {state: np.asarray(icons.shape_mask(state, 22), dtype=bool) for state in icons.ICON_STATES}
    for state, mask in masks.items():
        assert 0.15 < mask.mean() < 0.9, f"{state}: the glyph should fill part of the 22 px square"
    for a, b in itertools.combinations(icons.ICON_STATES, 2):
        differing = (masks[a] ^ masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert differing > 0.2, f"{a} and {b} have nearly the same silhouette ({differing:.2f})"
    assert len(set(icons.COLOURS.values())) == len(icons.COLOURS)


def test_icon_state_follows_service() -> None:
    assert icons.icon_state("speaking", online=False) == "offline"
    assert icons.icon_state("paused", online=True) == "paused"
    assert icons.icon_state("something-new", online=True) == "starting"
    assert icons.render("error", 22).size == (22, 22)
    with pytest.raises(ValueError):
        icons.render("nonsense")


@pytest.mark.parametrize("state", ["starting", "listening", "hearing", "thinking", "speaking", "paused", "error"])
def test_menu_enables_what_the_state_allows(state: str) -> None:
    view = ServiceView(online=True, state=state, paused=state == "paused", emotion="calm", intensity=0.9)
    entries = build_menu(view, EMOTIONS, RecordingActions())
    assert entries[0].text == f"Sottovoce: {state.capitalize()}" and not entries[0].enabled
    assert _item(entries, "Interrupt").enabled == (state in ("thinking", "speaking"))
    assert _item(entries, "Pause listening").checked == (state == "paused")
    emotion = _item(entries, "Emotion")
    assert emotion.text == "Emotion: calm (high)"
    assert [e.text for e in emotion.submenu if e.checked] == ["calm", "High"]
    assert all(e.radio for e in emotion.submenu if not e.separator)


def test_menu_offline_leaves_only_local_items() -> None:
    entries = build_menu(ServiceView(online=False, state="speaking"), EMOTIONS, RecordingActions())
    assert entries[0].text == "Sottovoce: Service offline"
    assert selectable(entries) == ["Open config file", "Quit tray"]


def test_menu_items_call_the_right_actions() -> None:
    actions = RecordingActions()
    view = ServiceView(online=True, state="speaking", emotion="neutral", intensity=0.5)
    entries = build_menu(view, EMOTIONS, actions)
    for prefix in ("Pause listening", "Interrupt", "Reindex", "Open config", "Quit"):
        _item(entries, prefix).action()  # type: ignore[misc]
    submenu = _item(entries, "Emotion").submenu
    _item(submenu, "humorous").action()  # type: ignore[misc]
    _item(submenu, "Low").action()  # type: ignore[misc]
    assert actions.calls == [("pause",), ("interrupt",), ("reindex",), ("open_config",), ("quit",),
                             ("set_emotion", "humorous", 0.5), ("set_emotion", "neutral", 0.25)]
    paused = build_menu(dataclasses.replace(view, paused=True, state="paused"), EMOTIONS, actions)
    _item(paused, "Pause listening").action()  # type: ignore[misc]
    assert actions.calls[-1] == ("resume",)
    # An emotion the service uses but our config lacks is still shown (and checked).
    odd = build_menu(dataclasses.replace(view, emotion="pirate"), EMOTIONS, actions)
    assert [e.text for e in _item(odd, "Emotion").submenu if e.checked] == ["pirate", "Medium"]


def test_intensity_levels_and_tooltip() -> None:
    assert [intensity_level(v) for v in (0.0, 0.3, 0.5, 0.75, 1.0)] == ["Low", "Low", "Medium", "High", "High"]
    assert [value for _, value in INTENSITY_LEVELS] == [0.25, 0.5, 0.9]
    view = ServiceView(online=True, state="thinking", last_transcript="how tall is the\nlighthouse " * 8)
    text = tooltip(view)
    assert text.startswith("Sottovoce: Thinking\nLast heard: how tall is the lighthouse")
    assert len(text.splitlines()[1]) <= len("Last heard: ") + 60 and "\n" not in text.splitlines()[1]
    assert tooltip(ServiceView(online=False, last_transcript="x")) == "Sottovoce: Service offline"
    busy = apply_properties(ServiceView(online=True, state="listening"), {"KnowledgeBase": {
        "documents": Variant("u", 3), "indexing": Variant("s", "file 1 of 2: big.txt, 64 of 160 chunks embedded")}})
    assert tooltip(busy) == "Sottovoce: Listening\nIndexing file 1 of 2: big.txt, 64 of 160 chunks embedded"
    idle = apply_properties(busy, {"KnowledgeBase": {"documents": Variant("u", 4), "indexing": Variant("s", "")}})
    assert tooltip(idle) == "Sottovoce: Listening"
    broken = apply_properties(idle, {"State": "error", "Problems": {"speaker": "no audio output device 'x'"}})
    assert tooltip(broken) == "Sottovoce: Error\nProblem: speaker: no audio output device 'x'"
    assert tooltip(apply_properties(broken, {"State": "listening", "Problems": {}})) == "Sottovoce: Listening"


def test_config_template_is_the_default_commented_out(tmp_path: Path, default_config: Config) -> None:
    path = tmp_path / "sottovoce" / "config.yaml"
    assert ensure_user_config(path) and not ensure_user_config(path)
    text = path.read_text(encoding="utf-8")
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    neutral = lambda cfg: dataclasses.replace(cfg, sources=())  # noqa: E731
    assert neutral(load_config(path)) == neutral(default_config)
    # Uncommenting every setting gives the defaults back, paths included.
    active = tmp_path / "active.yaml"
    header, body = config_template().split("\n\n", 1)
    active.write_text("".join(line[2:] if line.startswith("# ") else line
                              for line in body.splitlines(keepends=True)))
    assert neutral(load_config(active)) == neutral(default_config)
    assert open_in_editor(path, ("true",)) is None
    assert "not installed" in (open_in_editor(path, ("no-such-opener-here",)) or "")


def test_without_display_exits_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    run = subprocess.run(program("sottovoce-tray", "tray.app"), env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and "DISPLAY" in run.stderr
    helped = subprocess.run([*program("sottovoce-tray", "tray.app"), "--help"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--config" in helped.stdout


def test_autostart_entry_runs_the_tray() -> None:
    desktop_file = ROOT / "tray" / "sottovoce-tray.desktop"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(desktop_file, encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Exec"] == "sottovoce-tray"
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "sottovoce-tray = tray.app:main" in setup["options.entry_points"]["console_scripts"]
    run = subprocess.run(["desktop-file-validate", str(desktop_file)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# ------------------------------------------------------------------ on a virtual desktop
class Service:
    """The real ``sottovoced`` (no microphone, speaker into a WAV) on the desktop's bus."""

    def __init__(self, desktop: Desktop) -> None:
        self.desktop = desktop
        self.home = make_service_home(desktop.folder / "service")
        self.process: ServiceProcess | None = None
        self.starts = 0

    def start(self, extra_config: str = "", ready_state: str = "listening") -> None:
        self.starts += 1
        self.home.write_config(extra_config)
        run_dir = self.desktop.folder / f"sottovoced{self.starts}"
        run_dir.mkdir()
        self.process = start_sottovoced(self.desktop.bus, self.home, run_dir)
        self.desktop.probe.wait_until(lambda p: p.owner != "" and p.props.get("State") == ready_state,
                                      60, f"sottovoced on the bus in state {ready_state}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.desktop.probe.wait_until(lambda p: p.owner == "", 20, "sottovoced to leave the bus")


class Tray:
    """The real ``sottovoce-tray``, driven with the mouse and keyboard (xdotool)."""

    def __init__(self, desktop: Desktop, config: Path) -> None:
        self.desktop = desktop
        self.proc, self.log = desktop.start([*program("sottovoce-tray", "tray.app"), "--config", str(config),
                                             "--log-level", "DEBUG"], "tray_app.log")
        try:
            self.emotions = tuple(load_config(config).emotion.styles)
        except ConfigError:       # the tray then runs with the default styles
            self.emotions = tuple(load_config(use_user_file=False).emotion.styles)

    def icon_window(self) -> tuple[int, int, int, int]:
        """Geometry of the tray icon once it is docked inside trayer's panel, full size."""
        def docked() -> tuple[int, int, int, int] | None:
            px, py, pw, ph = self.desktop.geometry(self.desktop.tray_host)  # it grows as icons dock
            for window in self.desktop.find_windows("sottovoce-tray"):
                x, y, w, h = self.desktop.geometry(window)
                inside = px <= x and x + w <= px + pw and py <= y and y + h <= py + ph
                inside = inside and x + w <= self.desktop.width  # the panel may still be moving
                if inside and w >= 16 and h >= 16:
                    return x, y, w, h
            return None

        return wait_for(docked, 30, "the tray icon docked in trayer's panel")

    def wait_icon(self, state: str, screenshot: str) -> None:
        """Wait until the icon on screen is the glyph of ``state``; save the screenshot."""
        seen = ["nothing"]

        def shows() -> bool:
            x, y, w, h = self.icon_window()
            image = self.desktop.screenshot()
            seen[:] = [classify_icon(image.crop((x, y, x + w, y + h)))]
            if seen[0] == state:
                image.save(ARTIFACTS / screenshot)
            return seen[0] == state

        try:
            wait_for(shows, 20, f"the {state} icon on screen")
        except AssertionError:
            self.desktop.screenshot(screenshot)
            raise AssertionError(f"the icon shows {seen[0]!r}, not {state!r} (see tests/artifacts/{screenshot})")

    def synced(self, view: ServiceView) -> None:
        """Wait until the tray's own view (logged at DEBUG) is ``view``: its menu matches."""
        def last_view() -> str:
            return next((line for line in reversed(self.log.lines) if "view: " in line), "")

        wait_for(lambda: last_view().endswith(f"view: {view!r}"), 20, f"the tray to see {view}")

    def menus(self) -> dict[int, tuple[int, int, int, int]]:
        """The tray's open menus: window id -> geometry."""
        found = {w: self.desktop.geometry(w) for w in self.desktop.find_windows("sottovoce-tray")}
        return {w: g for w, g in found.items() if g[3] >= 60}

    def open_menu(self) -> int:
        """Right-click the icon; the menu's window id."""
        wait_for(lambda: not self.menus(), 10, "earlier menus to close")
        x, y, w, h = self.icon_window()
        self.desktop.xdotool("mousemove", str(x + w // 2), str(y + h // 2), "click", "3")
        return self._new_menu(set())

    def _new_menu(self, known: set[int]) -> int:
        return wait_for(lambda: next((w for w in self.menus() if w not in known), None), 20, "a menu to open")

    def _highlight(self, window: int) -> tuple[int, int]:
        """Screen x, y of the highlighted row of menu ``window``, once it stays put.

        Menus are mapped, then moved into place: a position counts when two looks agree.
        """
        last: list[Any] = [None]

        def settled() -> tuple[int, int] | None:
            geometry = self.menus().get(window)
            row = highlighted_row(self.desktop.screenshot(), geometry) if geometry else None
            spot = (geometry[0] + geometry[2] // 2, row) if geometry and row else None
            stable, last[0] = spot is not None and spot == last[0], spot
            return spot if stable else None

        return wait_for(settled, 10, "a highlighted menu row")

    def click(self, view: ServiceView, *path: str) -> None:
        """Open the menu and click the item at ``path`` (e.g. "Emotion", "calm") with the mouse.

        Keyboard navigation highlights the item (its position comes from the menu model),
        then the mouse clicks the highlighted row found on screen.
        """
        self.synced(view)
        entries = build_menu(view, self.emotions, _NoActions())
        window = self.open_menu()
        for depth, prefix in enumerate(path):
            index = next(i for i, text in enumerate(selectable(entries)) if text.startswith(prefix))
            # In the top menu nothing is highlighted yet; Right opens a submenu on its first item.
            presses = index + 1 if depth == 0 else index
            if presses:
                self.desktop.xdotool("key", *["Down"] * presses)
            if depth < len(path) - 1:
                entries = _item(entries, prefix).submenu
                self.desktop.xdotool("key", "Right")
                window = self._new_menu({window})
        x, y = self._highlight(window)
        self.desktop.screenshot(f"tray_menu_{'_'.join(path).replace(' ', '_').lower()}.png")
        self.desktop.xdotool("mousemove", str(x), str(y), "click", "1")

    def stop(self) -> int:
        stop_process(self.proc)
        return self.proc.returncode


class _NoActions:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def classify_icon(crop: Any) -> str:
    """Which state's glyph (at the size that fits best, centred) the screen crop shows."""
    from PIL import Image

    pixels = np.asarray(crop.convert("RGB"), dtype=np.int16)
    background = Counter(map(tuple, pixels.reshape(-1, 3))).most_common(1)[0][0]
    width, height = crop.size
    scores = {}
    for state, size in itertools.product(icons.ICON_STATES, range(16, max(width, height) + 1)):
        canvas = Image.new("RGBA", crop.size, (*background, 255))
        canvas.alpha_composite(_clip(icons.render(state, size), (width - size) // 2, (height - size) // 2, crop.size))
        diff = np.abs(np.asarray(canvas.convert("RGB"), dtype=np.int16) - pixels).mean()
        scores[state] = min(diff, scores.get(state, 1e9))
    best = min(scores, key=scores.__getitem__)
    return best if scores[best] < 12 else f"unknown (closest {best}, {scores[best]:.1f})"


def _clip(icon: Any, left: int, top: int, size: tuple[int, int]) -> Any:
    from PIL import Image

    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste(icon, (left, top))
    return layer


def highlighted_row(image: Any, menu: tuple[int, int, int, int]) -> int | None:
    """The y (screen) of the centre of the highlighted item in ``menu``, if one is."""
    x, y, w, h = menu
    pixels = np.asarray(image.crop((x + 4, y, x + w - 4, y + h)).convert("RGB"), dtype=np.int16)
    background = Counter(map(tuple, pixels.reshape(-1, 3))).most_common(1)[0][0]
    filled = (np.abs(pixels - np.array(background)).sum(axis=2) > 60).mean(axis=1) > 0.6
    rows = np.flatnonzero(filled)
    if rows.size < 10:  # separators are a line or two; an item is 20+ rows
        return None
    return y + int(rows.mean())


@pytest.fixture(scope="module")
def service(desktop: Desktop) -> Iterator[Service]:
    svc = Service(desktop)
    svc.start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def tray(desktop: Desktop, service: Service, default_config: Config) -> Iterator[Tray]:
    # The tray's config knows one emotion the service's does not: a refused call to test.
    config = desktop.folder / "tray.yaml"
    config.write_text("emotion:\n  styles:\n    grumpy: Be grumpy.\n", encoding="utf-8")
    app = Tray(desktop, config)
    yield app
    assert app.stop() == 0, "the tray should quit cleanly on SIGTERM"


def _view(desktop: Desktop) -> ServiceView:
    props = desktop.probe.props
    name, intensity = props["Emotion"]
    return ServiceView(online=bool(desktop.probe.owner), state=props["State"], paused=props["Paused"],
                       emotion=name, intensity=intensity, last_transcript=props["LastTranscript"],
                       last_reply=props["LastReply"], version=props["Version"])


def test_an_invalid_config_shows_as_an_error_instead_of_stopping_the_tray(
        desktop: Desktop, service: Service) -> None:
    """The tray exited 2 on an invalid config (restarting in a loop under systemd while the
    user edits the file): it runs with the default styles, says what is wrong (icon, tooltip,
    notification), and follows the service again once the file is fixed. (Before the module's
    tray: one tray per session.)"""
    config = desktop.folder / "broken.yaml"
    config.write_text("vad:\n  threshold: 7\n", encoding="utf-8")
    since = len(desktop.probe.notifications)
    app = Tray(desktop, config)
    try:
        summary, body = desktop.probe.wait_notification(lambda n: "config file is invalid" in n[0], since, 30)
        assert "vad.threshold" in body and "default emotion styles" in body, body
        app.log.wait(r"icon: error", 0, 30)
        app.wait_icon("error", "tray_config_invalid.png")
        assert app.proc.poll() is None
        mark = app.log.mark()
        config.write_text("emotion:\n  styles:\n    grumpy: Be grumpy.\n", encoding="utf-8")
        app.log.wait(r"the config file is valid again", mark, 30)
        app.log.wait(r"icon: listening", mark, 30)
        app.wait_icon("listening", "tray_config_fixed.png")
    finally:
        assert app.stop() == 0, "the tray should quit cleanly on SIGTERM"


def test_icon_docks_and_shows_the_state(desktop: Desktop, tray: Tray) -> None:
    tray.log.wait(r"icon: listening", 0, 30)
    tray.wait_icon("listening", "tray_docked_listening.png")


def test_a_second_tray_steps_aside(desktop: Desktop, tray: Tray) -> None:
    tray.icon_window()
    proc, log = desktop.start([*program("sottovoce-tray", "tray.app")], "tray_second.log")
    assert proc.wait(30) == 0
    log.wait(r"another sottovoce-tray already runs", 0, 10)
    assert tray.proc.poll() is None


def test_right_click_opens_the_menu(desktop: Desktop, tray: Tray) -> None:
    window = tray.open_menu()
    x, y, w, h = wait_for(lambda: tray.menus().get(window), 10, "the menu's geometry")
    image = desktop.screenshot("tray_menu_open.png")
    assert h >= 100 and w >= 100
    assert highlighted_row(image, (x, y, w, h)) is None, "nothing is highlighted before a key press"
    desktop.xdotool("key", "Escape")
    wait_for(lambda: not tray.menus(), 10, "the menu to close")


def test_pause_and_resume_from_the_menu(desktop: Desktop, tray: Tray) -> None:
    mark = tray.log.mark()
    tray.click(_view(desktop), "Pause listening")
    desktop.probe.wait_until(lambda p: p.props.get("Paused") is True and p.props.get("State") == "paused",
                             20, "the service to pause")
    tray.log.wait(r"icon: paused", mark, 20)
    tray.wait_icon("paused", "tray_paused.png")
    tray.click(_view(desktop), "Pause listening")  # checked now: clicking it resumes
    desktop.probe.wait_until(lambda p: p.props.get("Paused") is False, 20, "the service to resume")
    tray.wait_icon("listening", "tray_resumed.png")


def test_emotion_items_call_set_emotion(desktop: Desktop, tray: Tray) -> None:
    tray.click(_view(desktop), "Emotion", "cheerful")
    desktop.probe.wait_until(lambda p: tuple(p.props["Emotion"]) == ("cheerful", 0.5), 20, "cheerful")
    tray.click(_view(desktop), "Emotion", "High")
    desktop.probe.wait_until(lambda p: tuple(p.props["Emotion"]) == ("cheerful", 0.9), 20, "intensity 0.9")


def test_interrupt_is_offered_while_speaking(desktop: Desktop, tray: Tray) -> None:
    since = len(desktop.probe.signals)
    # About 30 s of speech (the WAV speaker keeps wall-clock pace): time to see and click.
    desktop.probe.call_assistant("Say", "s", [" ".join(["The lighthouse keeper climbs the stairs "
                                                        "every evening to light the lamp."] * 6)])
    desktop.probe.wait_until(lambda p: p.props.get("State") == "speaking", 20, "the service to speak")
    tray.wait_icon("speaking", "tray_speaking.png")
    tray.click(_view(desktop), "Interrupt")
    desktop.probe.wait_until(lambda p: any(name == "Interrupted" for name, _ in p.signals[since:]),
                             20, "the Interrupted signal")
    desktop.probe.wait_until(lambda p: p.props.get("State") == "listening", 20, "listening again")
    tray.wait_icon("listening", "tray_after_interrupt.png")


def test_refused_command_becomes_a_notification(desktop: Desktop, tray: Tray) -> None:
    since = len(desktop.probe.notifications)
    tray.click(_view(desktop), "Emotion", "grumpy")
    summary, body = desktop.probe.wait_notification(lambda n: "UnknownEmotion" in n[0], since, 20)
    assert "grumpy" in body
    assert tuple(desktop.probe.props["Emotion"]) == ("cheerful", 0.9), "the service is unaffected"
    assert tray.proc.poll() is None


def test_service_leaving_and_returning_is_followed(desktop: Desktop, tray: Tray, service: Service) -> None:
    mark = tray.log.mark()
    service.stop()
    tray.log.wait(r"icon: offline", mark, 20)
    tray.wait_icon("offline", "tray_offline.png")
    service.start()
    tray.log.wait(r"icon: listening", mark, 30)
    tray.wait_icon("listening", "tray_back_online.png")


def test_service_error_shows_a_notification(desktop: Desktop, tray: Tray, service: Service) -> None:
    # A service whose VAD model is missing reports Error(Model, ...) and stays on the bus.
    service.stop()
    since = len(desktop.probe.notifications)
    service.start(f"vad:\n  model: {desktop.folder / 'missing-vad.onnx'}\n", ready_state="error")
    summary, body = desktop.probe.wait_notification(lambda n: n[0] == "Sottovoce: Model", since, 15)
    assert "missing-vad.onnx" in body
    tray.wait_icon("error", "tray_error.png")
