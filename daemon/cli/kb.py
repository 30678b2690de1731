"""`sottovoce kb status|search|rebuild`: the knowledge base from the command line.

These work on the index directly (no service needed): status and search first bring the
index up to date with the folder, embedding only what changed.

When the service runs, its folder is the default, not the config's (it may have been started
with `sottovoced --kb`): `status` asks the service, which keeps its index up to date itself;
`search` reads the service's index (shared lock); `rebuild` has the service rebuild it
(Reindex), so that a second process never writes the index the service owns. The same holds
for a --kb naming the service's folder; a --kb naming another folder works here alone. An
older service that does not publish its folder leaves them to the config's folder, as before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO, TypeGuard

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

    rebuild = sub.add_parser("rebuild", help="re-embed every document from scratch (progress on stderr)",
                             description="Re-embed every document from scratch (progress on stderr). "
                             "The running service's folder is rebuilt by the service itself.")
    _add_kb_option(rebuild)
    rebuild.set_defaults(handler=_rebuild)


def _add_kb_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb", metavar="DIR", help="knowledge-base folder (default: the running "
                        "service's folder, else rag.knowledge_base)")


def _open(args: argparse.Namespace, service: dict[str, Any] | None = None, *,
          read_only: bool = False) -> Any:
    """The knowledge base of --kb or the config; of the running service when its
    KnowledgeBase property (``service``) names its folder and index. ``read_only``: never
    write the index (the service's, which the service keeps up to date)."""
    from daemon.config import load_config
    from daemon.kb import KnowledgeBase

    cfg = load_config(args.config)
    rag = cfg.rag
    if _names_its_folder(service):
        # KnowledgeBase keeps a folder's index in a folder of its own under rag.index_dir.
        index_dir = str(service.get("index_dir", ""))
        rag = dataclasses.replace(rag, knowledge_base=str(service["folder"]),
                                  index_dir=str(Path(index_dir).parent) if index_dir else rag.index_dir)
    elif getattr(args, "kb", None):
        rag = dataclasses.replace(rag, knowledge_base=str(Path(args.kb).expanduser().absolute()))
    kb = KnowledgeBase(rag, persist=not read_only)
    kb.check_folder()
    return kb


def _running_service(args: argparse.Namespace) -> dict[str, Any] | None:
    """The running service's KnowledgeBase property when this command is about its folder (no
    --kb, or a --kb naming that folder); None when no service runs or --kb names another."""
    from daemon.cli.remote import remote_kb_status

    remote = remote_kb_status()
    if remote is None:
        return None
    folder = str(remote.get("folder", ""))
    if getattr(args, "kb", None) and not (folder and _same_folder(args.kb, folder)):
        return None
    return remote


def _names_its_folder(service: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """The running service's KnowledgeBase property (``service``; None: no service for this
    folder) names its folder, whose index is then the service's (an older one does not say)."""
    return bool(service and service.get("folder"))


def _same_folder(given: str, folder: str) -> bool:
    try:
        return Path(given).expanduser().resolve() == Path(folder).resolve()
    except (OSError, RuntimeError):      # a symlink loop: not the service's folder anyway
        return False


def _status(args: argparse.Namespace) -> int:
    remote = _running_service(args)
    failed_start = remote is not None and _could_not_start(remote)
    info = None if remote is None or failed_start else _service_status(args, remote)
    if info is None:
        # A service that could not start has no knowledge base open: its folder, read here.
        kb = _open(args, remote if failed_start else None)
        kb.open(ProgressBar(sys.stderr))
        info = kb.status()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["last_indexed"])) if info["last_indexed"] else "never"
    from daemon.cli.remote_format import printable_values

    info = printable_values(info)       # no control characters on the terminal, as `status`
    print(f"Knowledge base  {info['folder']}")
    print(f"Index           {info['index_dir'] or 'not opened by the service (yet)'}")
    print(f"Documents       {info['documents']} ({info['chunks']} chunks)"
          + (f", as {info['source']} has them" if info.get("source") else ""))
    print(f"Last update     {when}")
    failed = info["failed"]
    print(f"Failed files    {len(failed) if failed else 'none'}")
    for name, reason in failed.items():
        print(f"  {name}: {reason}")
    return EXIT_OK


def _service_status(args: argparse.Namespace, remote: dict[str, Any]) -> dict[str, Any]:
    """The running service's view of its own knowledge base (``remote``, its KnowledgeBase
    property): the service keeps the index up to date itself, and a second process embedding
    the same files into the same index would only duplicate its work."""
    from daemon.config import load_config

    if "folder" in remote:
        folder, index_dir = str(remote["folder"]), str(remote.get("index_dir", ""))
    else:                       # an older service: it does not say, assume the config's
        rag = load_config(args.config).rag
        folder, index_dir = rag.knowledge_base, rag.index_dir
    return {"folder": folder, "index_dir": index_dir, "source": "the running service",
            "documents": int(remote.get("documents", 0)), "chunks": int(remote.get("chunks", 0)),
            "last_indexed": float(remote.get("last_indexed", 0.0)),
            "failed": dict(remote.get("failed", {}))}


def _could_not_start(remote: dict[str, Any]) -> bool:
    """The running service has not set up its knowledge base (no ``index_dir``) because it
    could not load its models (Problems ``startup``): its zeros are not the folder's. Say so
    on stderr (the caller then reads the folder in this process)."""
    from daemon.cli.remote import remote_problems
    from daemon.cli.remote_format import printable_text

    if remote.get("index_dir") or "folder" not in remote:     # set up, or an older service
        return False
    startup = (remote_problems() or {}).get("startup", "")
    if not startup:                 # still starting: its figures fill in as it indexes
        return False
    print(f"sottovoce: the service could not start ({printable_text(startup)}); reading its "
          f"knowledge base {printable_text(str(remote['folder']))} here instead",
          file=sys.stderr, flush=True)
    return True


def _search(args: argparse.Namespace) -> int:
    from daemon.errors import BadArgumentError

    if not args.query.strip():
        raise BadArgumentError("kb search: the query is empty; give some words to look for")
    if args.top_k is not None and args.top_k < 1:
        raise BadArgumentError("kb search: --top-k must be 1 or more")
    service = _running_service(args)
    # The service's index is the service's to write: read it, embed what it lacks in memory.
    kb = _open(args, service, read_only=_names_its_folder(service))
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
    """Rebuild the index; KnowledgeBaseError when the folder is unusable (exit 7) or the new
    index could not be saved (its job: no "Rebuilt" then)."""
    from daemon.errors import KnowledgeBaseError

    service = _running_service(args)
    started = time.monotonic()
    info = _rebuild_by_service(service) if _names_its_folder(service) else None
    if info is None:
        kb = _open(args, service)
        kb.rebuild(ProgressBar(sys.stderr))
        info = kb.status()
    if info.get("save_error"):
        raise KnowledgeBaseError(f"the index of {info['folder']} was rebuilt but could not be saved "
                                 f"to {info['index_dir']}: {info['save_error']}; make that folder "
                                 "writable or set rag.index_dir")
    by = " (by the running service)" if info.get("source") else ""
    print(f"Rebuilt {info['index_dir']}: {info['documents']} documents, {info['chunks']} chunks, "
          f"{len(info['failed'])} failed, in {time.monotonic() - started:.1f} s{by}")
    return EXIT_OK


def _rebuild_by_service(service: dict[str, Any]) -> dict[str, Any] | None:
    """Have the running service rebuild the index of its folder; its summary, or None when it
    left the bus before it could (then the rebuild happens here)."""
    from daemon.cli.remote import check_folder_indexed, remote_reindex

    print(f"The running service indexes {service['folder']}: it rebuilds the index itself.",
          file=sys.stderr, flush=True)
    done = remote_reindex(lambda line: print(f"indexing {line}", file=sys.stderr, flush=True))
    if done is None:
        return None
    check_folder_indexed(done)                 # its folder missing: exit 7, as `kb search`
    return {**done, "index_dir": done.get("index_dir") or service.get("index_dir", ""),
            "source": "the running service", "failed": dict(done.get("failed", {}))}


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
