"""Markup a chat model writes, turned into what a voice should read: no markdown, code,
links or stage directions ("(laughs)"); URLs and e-mail addresses said the way people say
them; headings, list items and table rows as separate sentences."""

from __future__ import annotations

import re

from daemon.stages.prompt import STYLE_TAG

_FENCED = re.compile(r"```.*?(```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]*)`")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_AUTOLINK = re.compile(r"<(?:https?|ftp|mailto):[^>\s]*>")
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>()\"']*[^\s<>()\"'.,;:!?]", re.IGNORECASE)
_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")
_DOMAIN = re.compile(r"\b([a-z0-9-]+)\.(com|org|net|io|dev|co\.uk|co|uk|de|fr|it|eu)\b", re.IGNORECASE)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}(?:[ \t]+(.*?))?[ \t]*#*[ \t]*$", re.MULTILINE)   # "#3" is a number
_BULLET = re.compile(r"^[ \t]*(?:[-*+•‣◦▪●]|\d{1,2}[.)])[ \t]+", re.MULTILINE)
_ITEM = "\u2063"            # marks a list item's line until lines are joined (invisible if left)
_QUOTE = re.compile(r"^[ \t]*>+[ \t]?", re.MULTILINE)
_RULE = re.compile(r"^[ \t]*(?:[-*_=][ \t]*){3,}$", re.MULTILINE)
_TABLE_SEP = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$", re.MULTILINE)
_EMPHASIS = (
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?!\w)"),
    re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w])"),
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
)


# Stage directions a chat model writes ("(laughs)", "*winks*", "[pause]"): acted, not read.
_ACTIONS = ("laugh|chuckl|giggl|smil|grin|sigh|wink|paus|gasp|cough|clears? (?:his |her |my |their )?throat|"
            "whisper|shrug|nod|snicker|snort|beam|blush|cheer|clap|yawn|sniff|sob|cri|applause|music|"
            "dramatic|playful|excited|hug|bow|waves?|sings?")
_DIRECTION = rf"(?:{_ACTIONS})[a-z]*(?: [a-z]+){{0,3}}"     # an action word and up to three more
_STAGE_DIRECTION = re.compile(
    rf"\({_DIRECTION}\)|\[{_DIRECTION}\]|"
    # between asterisks only where no sentence is under way: "He *nodded* slowly" is emphasis
    rf"(?:^|(?<=[.!?,;:…]\s))\*{_DIRECTION}\*(?!\w)", re.IGNORECASE | re.MULTILINE)
# A style note copied from the prompt ("(Tone: happy)"): about the reply, not part of it.
_STYLE_NOTE = re.compile(STYLE_TAG, re.IGNORECASE)


def strip_markup(text: str) -> str:
    """Markdown, code, links, URLs and stage directions out; headings, list items and table
    rows become sentences with a pause after each."""
    text = _STAGE_DIRECTION.sub(" ", text)
    text = _STYLE_NOTE.sub(" ", text)
    text = _FENCED.sub(" ", text)
    text = _INLINE_CODE.sub(lambda m: m.group(1) if len(m.group(1).split()) <= 4 else " ", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(" ", text)
    text = _URL.sub(" the link ", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)} at {_dotted(m.group(2))}", text)
    text = _DOMAIN.sub(lambda m: f"{m.group(1)} dot {_dotted(m.group(2))}", text)
    text = _RULE.sub("", text)
    text = _TABLE_SEP.sub("", text)
    text = _HEADING.sub(lambda m: _end_sentence(m.group(1) or ""), text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub(_ITEM, text)
    for pattern in _EMPHASIS:
        text = pattern.sub(lambda m: m.group(m.lastindex or 1), text)
    text = re.sub(r"^[ \t]*\|(.*?)\|?[ \t]*$", lambda m: _end_sentence(m.group(1).strip()), text, flags=re.MULTILINE)
    text = re.sub(r"\s*\|\s*", ", ", text)               # table cells
    return _join_lines(text)


def _dotted(domain: str) -> str:
    return " dot ".join(domain.split("."))


def _end_sentence(line: str) -> str:
    line = line.strip()
    return line if not line or line[-1] in ".!?:;," else line + "."


def _join_lines(text: str) -> str:
    """List items and headings on their own lines become separate sentences; every list
    item ends with a pause (a comma before a lower-case item, else a full stop)."""
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln.strip(_ITEM + " \t")]
    out: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        item, line, new = line.startswith(_ITEM), line.strip(_ITEM + " \t"), nxt.lstrip(_ITEM)
        # A line ends a sentence when the next one starts a new thought (capital letter).
        if line[-1].isalnum() and (new[:1].isupper() or new[:1].isdigit() or item and not new):
            line += "."
        elif line[-1].isalnum() and item and nxt.startswith(_ITEM):
            line += ","
        out.append(line)
    return " ".join(out)
