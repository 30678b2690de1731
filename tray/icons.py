"""Tray icons drawn with Pillow: one glyph per service state.

Each state has its own SHAPE (not only its own colour) so the icon reads at 22 px and for
people who cannot tell the colours apart: a disc (listening), level bars (hearing), three dots
(thinking), a speech bubble (speaking), a pause sign (paused), a warning triangle (error), an
hourglass (starting) and a struck-through ring (offline). Colours come from the Okabe-Ito
palette, which stays distinguishable under the common colour-vision deficiencies, and every
glyph has a dark outline so it shows on light and dark panels alike.
"""

from __future__ import annotations

from typing import Callable

from PIL import Image, ImageDraw

ICON_STATES = ("listening", "hearing", "thinking", "speaking", "paused", "error", "starting", "offline")

# Okabe-Ito colours (RGB).
COLOURS: dict[str, tuple[int, int, int]] = {
    "listening": (0, 158, 115),     # bluish green
    "hearing": (86, 180, 233),      # sky blue
    "thinking": (230, 159, 0),      # orange
    "speaking": (0, 114, 178),      # blue
    "paused": (153, 153, 153),      # grey
    "error": (213, 94, 0),          # vermillion
    "starting": (240, 228, 66),     # yellow
    "offline": (96, 96, 96),        # dark grey
}
OUTLINE = (20, 20, 20, 255)
WHITE = (255, 255, 255, 255)

_CANVAS = 256      # drawn large, then reduced: smooth edges at every size
_Draw = Callable[[ImageDraw.ImageDraw, tuple[int, int, int, int]], None]


def icon_state(state: str, online: bool) -> str:
    """The icon to show for a service ``state``; unknown states show as ``starting``."""
    if not online:
        return "offline"
    return state if state in COLOURS else "starting"


def render(state: str, size: int = 64) -> Image.Image:
    """The RGBA icon for ``state`` (one of :data:`ICON_STATES`), ``size`` pixels square."""
    if state not in _GLYPHS:
        raise ValueError(f"no icon for state {state!r} (known: {', '.join(ICON_STATES)})")
    image = Image.new("RGBA", (_CANVAS, _CANVAS), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    _GLYPHS[state](draw, (*COLOURS[state], 255))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def shape_mask(state: str, size: int = 22) -> Image.Image:
    """The glyph's silhouette at ``size`` px as a 1-bit image (used to compare shapes)."""
    alpha = render(state, size).getchannel("A")
    return alpha.point(lambda a: 255 if a >= 128 else 0).convert("1")


_W = 14  # outline width on the 256 px canvas (about 1.2 px at 22 px)


def _disc(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    draw.ellipse((40, 40, 216, 216), fill=fill, outline=OUTLINE, width=_W)


def _level_bars(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    # Five bars of uneven height: a sound level meter (the pause sign has two even bars).
    heights = (70, 150, 220, 150, 70)
    for i, height in enumerate(heights):
        left = 22 + i * 44
        top = 128 - height // 2
        draw.rounded_rectangle((left, top, left + 36, top + height), radius=10,
                               fill=fill, outline=OUTLINE, width=_W // 2)


def _dots(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    for centre in (44, 128, 212):
        draw.ellipse((centre - 38, 90, centre + 38, 166), fill=fill, outline=OUTLINE, width=_W)


def _bubble(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    tail = [(60, 160), (40, 244), (130, 170)]
    draw.polygon(tail, fill=fill, outline=OUTLINE, width=_W)
    draw.rounded_rectangle((12, 30, 244, 190), radius=56, fill=fill, outline=OUTLINE, width=_W)
    # Repaint the tail's joint so the outline does not cut it off from the bubble.
    draw.polygon([(66, 176), (52, 222), (120, 176)], fill=fill)
    # Two lines of "text" inside: a reply being said (dots would read as "thinking").
    draw.rounded_rectangle((58, 78, 198, 102), radius=10, fill=WHITE)
    draw.rounded_rectangle((58, 122, 160, 146), radius=10, fill=WHITE)


def _pause_bars(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    for left in (48, 148):
        draw.rounded_rectangle((left, 32, left + 60, 224), radius=12,
                               fill=fill, outline=OUTLINE, width=_W)


def _warning(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    draw.polygon([(128, 14), (248, 232), (8, 232)], fill=fill, outline=OUTLINE, width=_W)
    draw.rounded_rectangle((114, 82, 142, 170), radius=10, fill=WHITE)
    draw.ellipse((112, 184, 144, 216), fill=WHITE)


def _hourglass(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    draw.polygon([(48, 20), (208, 20), (128, 128)], fill=fill, outline=OUTLINE, width=_W)
    draw.polygon([(128, 128), (208, 236), (48, 236)], fill=fill, outline=OUTLINE, width=_W)


def _struck_ring(draw: ImageDraw.ImageDraw, fill: tuple[int, int, int, int]) -> None:
    draw.ellipse((24, 24, 232, 232), outline=OUTLINE, width=52)
    draw.ellipse((32, 32, 224, 224), outline=fill, width=36)
    draw.line((62, 62, 194, 194), fill=OUTLINE, width=52)
    draw.line((66, 66, 190, 190), fill=fill, width=36)


_GLYPHS: dict[str, _Draw] = {
    "listening": _disc,
    "hearing": _level_bars,
    "thinking": _dots,
    "speaking": _bubble,
    "paused": _pause_bars,
    "error": _warning,
    "starting": _hourglass,
    "offline": _struck_ring,
}
