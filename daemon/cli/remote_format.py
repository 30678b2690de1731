"""How the D-Bus subcommands print: status, index summaries and `watch` lines (text or JSON)."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from typing import Any, Mapping

# What a terminal acts on instead of printing: C0 and C1 controls (ESC, CSI, newline, ...),
# DEL, and the Unicode line and paragraph separators. Emoji joiners and the like print.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# The same characters as raw text inside a JSON string (json.dumps escapes only C0 itself).
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029]")


def printable_text(text: str) -> str:
    """``text`` with every control character escaped as Python writes it (``\\x1b``,
    ``\\n``): a transcript or reply sent over D-Bus must not recolour, move or clear the
    user's terminal, nor fake a line of its own."""
    return "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text)


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def printable_values(value: Any) -> Any:
    """``value`` (plain values from D-Bus: str, numbers, lists, dicts) with :func:`printable_text`
    applied to every string in it, keys included."""
    if isinstance(value, str):
        return printable_text(value)
    if isinstance(value, dict):
        return {printable_values(k): printable_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_values(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """``json.dumps`` keeping non-ASCII text as it is, but not the controls a terminal acts on."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def status_dict(props: Mapping[str, Any]) -> dict[str, Any]:
    """The properties under stable snake_case keys (what `status --json` prints)."""
    name, intensity = props.get("Emotion", ["", 0.0])
    return {
        "state": props.get("State", ""),
        "paused": bool(props.get("Paused", False)),
        "emotion": {"name": name, "intensity": intensity},
        "last_transcript": props.get("LastTranscript", ""),
        "last_reply": props.get("LastReply", ""),
        "last_timings": dict(props.get("LastTimings", {})),
        "knowledge_base": dict(props.get("KnowledgeBase", {})),
        "models": dict(props.get("Models", {})),
        "version": props.get("Version", ""),
        "problems": dict(props.get("Problems", {})),
    }


def status_json(props: Mapping[str, Any]) -> str:
    return json_text(status_dict(props), indent=2)


def kb_text(kb: Mapping[str, Any]) -> str:
    """One line about the knowledge base, plus one per failed file and one while it indexes."""
    kb = printable_values(dict(kb))
    stamp = float(kb.get("last_indexed", 0.0))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "never"
    failed = dict(kb.get("failed", {}))
    lines = [f"{kb.get('documents', 0)} documents, {kb.get('chunks', 0)} chunks, "
             f"indexed {when}, {len(failed)} failed"]
    lines += [f"  failed: {path}: {reason}" for path, reason in sorted(failed.items())]
    if kb.get("indexing"):
        lines.append(f"  indexing {kb['indexing']}")
    return "\n".join(lines)


def _kb_now(kb: Mapping[str, Any]) -> str:
    """What the knowledge base is doing: its indexing line while it indexes, else its summary."""
    return f"indexing {kb['indexing']}" if kb.get("indexing") else kb_text(kb).splitlines()[0]


def status_text(props: Mapping[str, Any]) -> str:
    """`sottovoce status` for a person."""
    s = status_dict(printable_values(dict(props)))
    lines = [
        f"state:           {s['state']}" + (" (paused)" if s["paused"] and s["state"] != "paused" else ""),
        *[f"  problem:       {what}: {why}" for what, why in sorted(s["problems"].items())],
        f"emotion:         {s['emotion']['name']} ({float(s['emotion']['intensity']):.2f})",
        f"version:         {s['version']}",
        "knowledge base:  " + kb_text(s["knowledge_base"]).replace("\n", "\n                 "),
        "models:",
    ]
    lines += [f"  {role:<14} {desc}" for role, desc in sorted(s["models"].items())]
    lines.append(f"last transcript: {s['last_transcript'] or '-'}")
    lines.append(f"last reply:      {s['last_reply'] or '-'}")
    if s["last_timings"]:
        lines.append(f"last timings:    {timings_text(s['last_timings'])}")
    return "\n".join(lines)


_STAGES = (("stt_s", "recognition"), ("retrieve_s", "retrieval"), ("llm_first_token_s", "first token"))


def timings_text(timings: Mapping[str, float]) -> str:
    """'first audio 0.61 s (recognition 0.18, retrieval 0.01, first token 0.10), total 1.20 s'."""
    inside = ", ".join(f"{name} {timings[key]:.2f}" for key, name in _STAGES if timings.get(key))
    return (f"first audio {timings.get('first_audio_s', 0.0):.2f} s" + (f" ({inside})" if inside else "")
            + f", total {timings.get('total_s', 0.0):.2f} s")


def _text_line(member: str, raw: list[Any]) -> str | None:
    args = printable_values(raw)
    if member == "StateChanged":
        return f"state: {args[0]}"
    if member == "Transcript":
        return f"transcript: {args[0]}"
    if member == "Reply":
        sources = f" [sources: {', '.join(args[1])}]" if args[1] else ""
        return f"reply: {args[0]}{sources}"
    if member == "Interrupted":
        return f"interrupted after: {raw[0]!r}"
    if member == "Error":
        return f"error: {args[0]}: {args[1]}"
    if member == "IndexUpdated":
        return f"index updated: {args[0]} documents, {args[1]} chunks"
    if member == "PropertiesChanged":
        # State changes already have their own line. The values are printed as JSON, which
        # escapes control characters itself: the raw ones, not escaped twice.
        changed = {printable_text(str(k)): v for k, v in raw[1].items() if k != "State"}
        kb = changed.pop("KnowledgeBase", None)
        lines = [f"knowledge base: {_kb_now(kb)}"] if kb is not None else []
        if changed:
            lines.append("changed: " + ", ".join(f"{k}={json_text(v)}"
                                                 for k, v in sorted(changed.items())))
        return "\n".join(lines) or None
    return None


def signal_line(member: str, args: list[Any], as_json: bool) -> str | None:
    """One `watch` line for a signal; None for signals not worth a line."""
    if as_json:
        if member == "PropertiesChanged":
            return json_text({"signal": member, "changed": args[1]})
        return json_text({"signal": member, "args": args})
    return _text_line(member, args)
