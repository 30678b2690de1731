"""`sottovoce kb status|search|rebuild`: the knowledge base from the command line.

These work on the index directly (no service needed): status and search first bring the
index up to date with the folder, embedding only what changed. `status` asks the running
service instead when there is one (and no --kb is given): it keeps its index up to date itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from daemon.errors import EXIT_OK


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "kb", help="knowledge base: status, search, rebuild",
        description="Inspect and maintain the knowledge-base index (works without the service).",
    )
    sub = parser.add_subparsers(dest="kb_command", metavar="ACTION", required=True)

    status = sub.add_parser("status", help="documents, chunks, failed files and last update")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    _add_kb_option(status)
    status.set_defaults(handler=_status)

    search = sub.add_parser("search", help="top passages for a query, with scores and sources")
    search.add_argument("query", metavar="QUERY", help="what to look for, in words")
    search.add_argument("-k", "--top-k", type=int, default=None, metavar="N",
                        help="number of passages (default: rag.top_k)")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    _add_kb_option(search)
    search.set_defaults(handler=_search)

    rebuild = sub.add_parser("rebuild", help="re-embed every document from scratch (progress on stderr)")
    _add_kb_option(rebuild)
    rebuild.set_defaults(handler=_rebuild)


def _add_kb_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb", metavar="DIR", help="knowledge-base folder (default: rag.knowledge_base)")


def _open(args: argparse.Namespace) -> Any:
    from daemon.config import load_config
    from daemon.kb import KnowledgeBase

    cfg = load_config(args.config)
    rag = cfg.rag
    if getattr(args, "kb", None):
        rag = dataclasses.replace(rag, knowledge_base=str(Path(args.kb).expanduser().absolute()))
    kb = KnowledgeBase(rag)
    kb.check_folder()
    return kb


def _status(args: argparse.Namespace) -> int:
    info = None if getattr(args, "kb", None) else _service_status(args)
    if info is None:
        kb = _open(args)
        kb.open(ProgressBar(sys.stderr))
        info = kb.status()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["last_indexed"])) if info["last_indexed"] else "never"
    print(f"Knowledge base  {info['folder']}")
    print(f"Index           {info['index_dir']}")
    print(f"Documents       {info['documents']} ({info['chunks']} chunks)"
          + (f", as {info['source']} has them" if info.get("source") else ""))
    print(f"Last update     {when}")
    failed = info["failed"]
    print(f"Failed files    {len(failed) if failed else 'none'}")
    for name, reason in failed.items():
        print(f"  {name}: {reason}")
    return EXIT_OK


def _service_status(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running service's view of its own knowledge base, or None when it is not running:
    the service keeps the index up to date itself, and a second process embedding the same
    files into the same index would only duplicate its work."""
    from daemon.cli.remote import remote_kb_status
    from daemon.config import load_config

    remote = remote_kb_status()
    if remote is None:
        return None
    rag = load_config(args.config).rag
    return {"folder": rag.knowledge_base, "index_dir": rag.index_dir, "source": "the running service",
            "documents": int(remote.get("documents", 0)), "chunks": int(remote.get("chunks", 0)),
            "last_indexed": float(remote.get("last_indexed", 0.0)),
            "failed": dict(remote.get("failed", {}))}


def _search(args: argparse.Namespace) -> int:
    from daemon.errors import BadArgumentError

    if not args.query.strip():
        raise BadArgumentError("kb search: the query is empty; give some words to look for")
    if args.top_k is not None and args.top_k < 1:
        raise BadArgumentError("kb search: --top-k must be 1 or more")
    kb = _open(args)
    kb.open(ProgressBar(sys.stderr))
    passages = kb.retrieve(args.query, args.top_k)
    relevant = kb.is_relevant(passages)
    threshold = kb.cfg.relevance_threshold
    if args.json:
        print(json.dumps({"query": args.query, "relevant": relevant, "threshold": threshold,
                          "passages": [dataclasses.asdict(p) for p in passages]}, indent=2))
        return EXIT_OK
    if not passages:
        print("No documents in the knowledge base.")
    for rank, p in enumerate(passages, start=1):
        heading = f"  ({p.heading})" if p.heading else ""
        print(f"{rank}. {p.score:.3f}  {p.source} #{p.position}{heading}")
        print("   " + " ".join(p.text.split())[:400])
    if passages and not relevant:
        print(f"(nothing reaches the relevance threshold {threshold:.2f}: the assistant would just chat)")
    return EXIT_OK


def _rebuild(args: argparse.Namespace) -> int:
    kb = _open(args)
    started = time.monotonic()
    kb.rebuild(ProgressBar(sys.stderr))
    info = kb.status()
    print(f"Rebuilt {info['index_dir']}: {info['documents']} documents, {info['chunks']} chunks, "
          f"{len(info['failed'])} failed, in {time.monotonic() - started:.1f} s")
    return EXIT_OK


class ProgressBar:
    """``progress(done, total, name)`` drawn on a terminal, or a line a second to a log."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int, name: str) -> None:
        now = time.monotonic()
        finished = total > 0 and done >= total
        if not finished and now - self._last < (0.1 if self._tty else 1.0):
            return
        self._last = now
        frac = done / total if total else 1.0
        if self._tty:
            filled = int(self.WIDTH * frac)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self._stream.write(f"\r[{bar}] {done}/{total} {name[-40:]:<40}")
            if finished:
                self._stream.write("\n")
        else:
            self._stream.write(f"indexing {done}/{total} ({frac:.0%}) {name}\n")
        self._stream.flush()
