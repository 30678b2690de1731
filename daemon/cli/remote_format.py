"""How the D-Bus subcommands print: status, index summaries and `watch` lines (text or JSON)."""

from __future__ import annotations

import json
import time
from typing import Any, Mapping


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
    return json.dumps(status_dict(props), indent=2, ensure_ascii=False)


def kb_text(kb: Mapping[str, Any]) -> str:
    """One line about the knowledge base, plus one per failed file and one while it indexes."""
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
    s = status_dict(props)
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


def _text_line(member: str, args: list[Any]) -> str | None:
    if member == "StateChanged":
        return f"state: {args[0]}"
    if member == "Transcript":
        return f"transcript: {args[0]}"
    if member == "Reply":
        sources = f" [sources: {', '.join(args[1])}]" if args[1] else ""
        return f"reply: {args[0]}{sources}"
    if member == "Interrupted":
        return f"interrupted after: {args[0]!r}"
    if member == "Error":
        return f"error: {args[0]}: {args[1]}"
    if member == "IndexUpdated":
        return f"index updated: {args[0]} documents, {args[1]} chunks"
    if member == "PropertiesChanged":
        # State changes already have their own line.
        changed = {k: v for k, v in args[1].items() if k != "State"}
        kb = changed.pop("KnowledgeBase", None)
        lines = [f"knowledge base: {_kb_now(kb)}"] if kb is not None else []
        if changed:
            lines.append("changed: " + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                                                 for k, v in sorted(changed.items())))
        return "\n".join(lines) or None
    return None


def signal_line(member: str, args: list[Any], as_json: bool) -> str | None:
    """One `watch` line for a signal; None for signals not worth a line."""
    if as_json:
        if member == "PropertiesChanged":
            return json.dumps({"signal": member, "changed": args[1]}, ensure_ascii=False)
        return json.dumps({"signal": member, "args": args}, ensure_ascii=False)
    return _text_line(member, args)
