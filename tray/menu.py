"""The tray menu as plain data, built from the service's view (testable without a display).

:func:`build_menu` decides the items, their labels and which are enabled or checked;
:func:`to_pystray` turns that into pystray objects. The menu is rebuilt on every change of
the view, so an item's action always matches what the menu showed when it was clicked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from tray.client import ServiceView

# Low / Medium / High emotion intensity, as sent with SetEmotion.
INTENSITY_LEVELS: tuple[tuple[str, float], ...] = (("Low", 0.25), ("Medium", 0.5), ("High", 0.9))

# States in which there is a reply to interrupt.
INTERRUPTIBLE = frozenset({"thinking", "speaking"})

_TRANSCRIPT_CHARS = 60


class TrayActions(Protocol):
    """What the menu's items do (the tray app implements it over the D-Bus client)."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def interrupt(self) -> None: ...
    def set_emotion(self, name: str, intensity: float) -> None: ...
    def reindex(self) -> None: ...
    def open_config(self) -> None: ...
    def quit(self) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One menu item. ``checked`` is None for plain items; ``submenu`` makes it a parent."""

    text: str
    action: Callable[[], None] | None = None
    enabled: bool = True
    checked: bool | None = None
    radio: bool = False
    submenu: tuple["Entry", ...] = ()
    separator: bool = False


SEPARATOR = Entry("", enabled=False, separator=True)


def state_label(view: ServiceView) -> str:
    """The state in words, as the menu header and tooltip show it."""
    return "Service offline" if not view.online else view.state.capitalize()


def intensity_level(intensity: float) -> str:
    """The Low/Medium/High label nearest to ``intensity``."""
    return min(INTENSITY_LEVELS, key=lambda level: abs(level[1] - intensity))[0]


def tooltip(view: ServiceView) -> str:
    """The icon's title: the state, the last transcript when there is one, the knowledge
    base's progress while it indexes, and why the state is 'error'."""
    text = f"Sottovoce: {state_label(view)}"
    heard = " ".join(view.last_transcript.split())
    if view.online and heard:
        if len(heard) > _TRANSCRIPT_CHARS:
            heard = heard[: _TRANSCRIPT_CHARS - 1] + "…"
        text += f"\nLast heard: {heard}"
    if view.online and view.indexing:
        text += f"\nIndexing {view.indexing}"
    if view.online:
        text += "".join(f"\nProblem: {what}: {why}" for what, why in view.problems)
    return text


def build_menu(view: ServiceView, emotions: Sequence[str], actions: TrayActions) -> tuple[Entry, ...]:
    """The menu for ``view``; ``emotions`` are the configured style names, in order."""
    online = view.online
    toggle = actions.resume if view.paused else actions.pause
    return (
        Entry(f"Sottovoce: {state_label(view)}", enabled=False),
        SEPARATOR,
        Entry("Pause listening", toggle, enabled=online, checked=view.paused),
        Entry("Interrupt", actions.interrupt, enabled=online and view.state in INTERRUPTIBLE),
        Entry(f"Emotion: {view.emotion} ({intensity_level(view.intensity).lower()})",
              enabled=online, submenu=_emotion_menu(view, emotions, actions)),
        SEPARATOR,
        Entry("Reindex knowledge base", actions.reindex, enabled=online),
        Entry("Open config file", actions.open_config),
        SEPARATOR,
        Entry("Quit tray", actions.quit),
    )


def _emotion_menu(view: ServiceView, emotions: Sequence[str], actions: TrayActions) -> tuple[Entry, ...]:
    names = list(emotions)
    if view.emotion not in names:  # the service may run with another config than ours
        names.append(view.emotion)
    level = intensity_level(view.intensity)

    def choose(name: str, intensity: float) -> Callable[[], None]:
        return lambda: actions.set_emotion(name, intensity)

    styles = tuple(Entry(name, choose(name, view.intensity), checked=name == view.emotion, radio=True)
                   for name in names)
    strengths = tuple(Entry(label, choose(view.emotion, value), checked=label == level, radio=True)
                      for label, value in INTENSITY_LEVELS)
    return styles + (SEPARATOR,) + strengths


def selectable(entries: Sequence[Entry]) -> list[str]:
    """Texts of the items keyboard navigation stops at, in order (enabled, not separators)."""
    return [e.text for e in entries if e.enabled and not e.separator]


def to_pystray(entries: Sequence[Entry], pystray: Any) -> list[Any]:
    """``entries`` as pystray ``MenuItem`` objects (``pystray`` is the imported module)."""
    items: list[Any] = []
    for entry in entries:
        if entry.separator:
            items.append(pystray.Menu.SEPARATOR)
            continue
        action: Any = pystray.Menu(*to_pystray(entry.submenu, pystray)) if entry.submenu else _wrap(entry.action)
        checked = None if entry.checked is None else _constant(entry.checked)
        items.append(pystray.MenuItem(entry.text, action, checked=checked,
                                      radio=entry.radio, enabled=entry.enabled))
    return items


def _wrap(action: Callable[[], None] | None) -> Callable[[], None] | None:
    # pystray inspects the argument count of plain functions: hand it a 0-argument lambda.
    if action is None:
        return None
    return lambda: action()


def _constant(value: bool) -> Callable[[Any], bool]:
    return lambda _item: value
