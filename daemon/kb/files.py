"""Which files of the knowledge-base folder are documents, and walking it safely.

Hidden files, editors' temporary files and backups are never indexed. Symbolic links are
followed, but a link that points back into a folder already walked (a loop) is reported,
not followed forever.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from daemon.kb.loaders import is_supported

_TEMP_SUFFIXES = (
    "~", ".swp", ".swo", ".swx", ".swpx", ".tmp", ".temp", ".part", ".partial", ".crdownload",
    ".kate-swp", ".bak", ".orig", ".lock",
)
_TEMP_PREFIXES = (".", "~", "#", ".~lock")
BAD_NAME = "the file name is not valid UTF-8 (rename it to index it)"


def is_ignored(relpath: str | PurePath) -> bool:
    """True for hidden files/folders and editor temporaries (vim, emacs, gedit, LibreOffice...)."""
    parts = PurePath(relpath).parts
    if not parts:
        return True
    if any(p.startswith(".") for p in parts[:-1]):
        return True
    name = parts[-1]
    lowered = name.lower()
    return (
        name.startswith(_TEMP_PREFIXES)
        or lowered.endswith(_TEMP_SUFFIXES)
        or (name.startswith("#") and name.endswith("#"))
        or name == "4913"            # vim's "can I write here?" probe file
    )


def has_bad_name(relpath: str) -> bool:
    """A name the file system allows but that is not UTF-8 (Python keeps its bytes as
    surrogates): it cannot be embedded, logged or sent over D-Bus as it is."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(relpath: str) -> str:
    """``relpath`` with every byte that is not UTF-8 shown as U+FFFD."""
    return relpath.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def log_name(relpath: str) -> str:
    """``relpath`` for one line of a log or a status: as it is when every character prints,
    else quoted with Python's escapes (a newline in a file name as ``\\n``, so it cannot
    split the line or fake another one); bytes that are not UTF-8 show as U+FFFD."""
    text = printable(relpath)
    return text if text.isprintable() else repr(text)


def is_candidate(relpath: str | PurePath) -> bool:
    """A path the knowledge base would index (by name only; content is checked later)."""
    return not is_ignored(relpath) and is_supported(Path(relpath))


@dataclass
class FolderScan:
    """Result of walking the folder: documents found and paths that could not be used."""

    files: dict[str, os.stat_result] = field(default_factory=dict)   # relpath -> stat
    problems: dict[str, str] = field(default_factory=dict)           # relpath -> reason


def stat_document(path: Path) -> os.stat_result:
    """``os.stat`` with reasons a person understands; raises ``OSError`` subclasses."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "symlink loop") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise OSError(errno.ENOENT, "broken symlink") from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    return st


def scan_folder(root: Path, skip: Path | None = None) -> FolderScan:
    """Walk ``root`` (following symlinks, detecting loops), collecting candidate documents."""
    result = FolderScan()
    seen_dirs: set[tuple[int, int]] = set()
    _walk(root, root, seen_dirs, result, Path(os.path.realpath(skip)) if skip else None)
    return result


def _walk(root: Path, folder: Path, seen: set[tuple[int, int]], out: FolderScan, skip: Path | None) -> None:
    try:
        st = os.stat(folder)
        entries = list(os.scandir(folder))
    except OSError as exc:
        rel = _rel(root, folder)
        if rel != ".":
            out.problems[rel + "/"] = _reason(exc)
        return
    if (st.st_dev, st.st_ino) in seen:
        out.problems[_rel(root, folder) + "/"] = "symlink loop (folder already indexed)"
        return
    seen.add((st.st_dev, st.st_ino))
    for entry in sorted(entries, key=lambda e: e.name):
        path = Path(entry.path)
        rel = _rel(root, path)
        if is_ignored(rel):
            continue
        if has_bad_name(rel):
            out.problems[printable(rel)] = BAD_NAME
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            if skip is None or Path(os.path.realpath(path)) != skip:   # an index kept inside the folder
                _walk(root, path, seen, out, skip)
            continue
        if not is_supported(path):
            continue
        try:
            out.files[rel] = stat_document(path)
        except OSError as exc:
            out.problems[rel] = _reason(exc)


def _rel(root: Path, path: Path) -> str:
    return os.path.relpath(path, root)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EACCES or isinstance(exc, PermissionError):
        return "permission denied (cannot read the file)"
    return exc.strerror or str(exc)
