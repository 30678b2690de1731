"""Turn a document's bytes into a title and headed sections of plain text.

One function per format; each raises :class:`DocumentError` with a short, human reason
("not a valid PDF", "binary data, not text") that ends up in ``kb status``.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_LOGGER = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".text", ".rst"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | {".pdf", ".docx"}


class DocumentError(Exception):
    """A document that cannot be indexed; ``str(exc)`` is the reason shown to the user."""


@dataclass(frozen=True)
class Section:
    heading: str          # "Title > Chapter", "" when the document has none
    text: str


@dataclass(frozen=True)
class LoadedDocument:
    title: str
    sections: tuple[Section, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def load_document(path: Path, data: bytes) -> LoadedDocument:
    """Parse ``data`` (the content of ``path``) by its suffix."""
    if not data.strip():
        raise DocumentError("empty file (nothing to index)")
    suffix = path.suffix.lower()
    loader: Callable[[bytes], LoadedDocument]
    if suffix in MARKDOWN_SUFFIXES:
        loader = _load_markdown
    elif suffix in HTML_SUFFIXES:
        loader = _load_html
    elif suffix == ".pdf":
        loader = _load_pdf
    elif suffix == ".docx":
        loader = _load_docx
    else:
        loader = _load_text
    doc = loader(data)
    sections = tuple(s for s in doc.sections if s.text.strip())
    if not sections:
        raise DocumentError("no text found in the document")
    return LoadedDocument(doc.title, sections)


# ------------------------------------------------------------------ plain text
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with a BOM (Windows "Unicode"), else Windows-1252,
    else Latin-1; binary data is refused."""
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise DocumentError("not valid UTF-16 text (it starts like UTF-16)") from None
        _refuse_binary(text[:4096].encode("utf-8", "replace"))
        return text
    _refuse_binary(data[:8192])
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _refuse_binary(head: bytes) -> None:
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in head or head and controls / len(head) > 0.05:
        raise DocumentError("binary data, not text")


def _looks_like_heading(line: str, prev_blank: bool, next_line: str) -> bool:
    words = line.split()
    return (
        prev_blank
        and bool(next_line.strip())
        and 0 < len(words) <= 10
        and len(line) <= 80
        and not re.search(r"[.,;!?]$", line)
        and (line[0].isupper() or line[0].isdigit())
    )


def text_sections(text: str, title: str = "") -> LoadedDocument:
    """Sections of plain text: a short unpunctuated line after a blank line is a heading."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    sections: list[Section] = []
    heading, body = "", []
    prev_blank = True
    for i, raw in enumerate(lines):
        line = raw.strip()
        following = next((ln for ln in lines[i + 1:] if ln.strip()), "")
        underline = i + 1 < len(lines) and re.fullmatch(r"\s*(=+|-+)\s*", lines[i + 1] or "x")
        if line and (underline or _looks_like_heading(line, prev_blank, following)):
            if body:
                sections.append(Section(_path(title, heading), "\n".join(body).strip()))
                body = []
            if not title and not sections:
                title = line
            else:
                heading = line
        elif line and re.fullmatch(r"(=+|-+)", line) and i and lines[i - 1].strip():
            pass                      # the underline of a heading handled above
        else:
            body.append(raw.rstrip())
        prev_blank = not line
    if body:
        sections.append(Section(_path(title, heading), "\n".join(body).strip()))
    return LoadedDocument(title, tuple(sections))


def _path(*parts: str) -> str:
    return " > ".join(p for p in parts if p)


def _load_text(data: bytes) -> LoadedDocument:
    return text_sections(decode_text(data))


# ------------------------------------------------------------------ markdown
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")


def _load_markdown(data: bytes) -> LoadedDocument:
    text = decode_text(data)
    lines = text.replace("\r\n", "\n").split("\n")
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    body: list[str] = []
    title = ""

    def flush() -> None:
        if any(b.strip() for b in body):
            sections.append(Section(_path(*(h for _, h in stack)), "\n".join(body).strip()))
        body.clear()

    for i, line in enumerate(lines):
        level, heading = 0, ""
        match = _ATX.match(line)
        if match:
            level, heading = len(match.group(1)), match.group(2)
        elif i + 1 < len(lines) and line.strip() and re.fullmatch(r"(=+|-+)\s*", lines[i + 1]):
            level, heading = (1 if lines[i + 1].startswith("=") else 2), line.strip()
        elif re.fullmatch(r"(=+|-+)\s*", line) and i and lines[i - 1].strip():
            continue
        if level:
            flush()
            heading = _clean_markdown(heading)
            stack = [(lv, h) for lv, h in stack if lv < level] + [(level, heading)]
            title = title or heading
        else:
            body.append(_clean_markdown(line))
    flush()
    return LoadedDocument(title, tuple(sections))


def _clean_markdown(line: str) -> str:
    return _EMPHASIS.sub("", _LINK.sub(r"\1", line))


# ------------------------------------------------------------------ HTML
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_MARK = "\x1eH"


def _load_html(data: bytes) -> LoadedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for tag in soup.find_all(_HEADINGS):
        tag.replace_with(soup.new_string(f"\n\n{_MARK}{tag.name[1]} {tag.get_text(' ', strip=True)}\n"))
    for tag in soup.find_all(["p", "li", "tr", "br", "div", "pre", "blockquote", "dd", "dt"]):
        tag.insert_after(soup.new_string("\n"))
    text = soup.get_text("")
    return _sections_from_marked(f"{_MARK}0 {title}\n{text}" if title else text)


def _sections_from_marked(text: str) -> LoadedDocument:
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    body: list[str] = []
    title = ""
    for line in text.split("\n"):
        if line.startswith(_MARK):
            if any(b.strip() for b in body):
                sections.append(Section(_path(*(h for _, h in stack)), "\n".join(body).strip()))
            body = []
            level, _, heading = line[len(_MARK):].partition(" ")
            title = title or heading
            if level == "0":
                continue
            stack = [(lv, h) for lv, h in stack if lv < int(level)] + [(int(level), heading)]
        else:
            body.append(" ".join(line.split()))
    if any(b.strip() for b in body):
        sections.append(Section(_path(*(h for _, h in stack)), "\n".join(body).strip()))
    return LoadedDocument(title, tuple(sections))


# ------------------------------------------------------------------ DOCX
def _load_docx(data: bytes) -> LoadedDocument:
    import zipfile

    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(f"not a valid .docx file ({exc})") from None
    except Exception as exc:  # python-docx raises assorted XML errors on damaged files
        raise DocumentError(f"cannot read .docx file ({type(exc).__name__}: {exc})") from None
    lines: list[str] = []
    for para in document.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        text = para.text.strip()
        if not text:
            lines.append("")
        elif style == "Title" or style.startswith("Heading"):
            level = 1 if style == "Title" else int(re.sub(r"\D", "", style) or 1)
            lines.append(f"{_MARK}{level} {text}")
        else:
            lines.append(text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    return _sections_from_marked("\n".join(lines))


# ------------------------------------------------------------------ PDF
def _load_pdf(data: bytes) -> LoadedDocument:
    import pypdf

    # pypdf warns about every flaw it meets ("invalid pdf header: b'...'"); a damaged file is
    # named once, by the indexer's "skipping FILE: not a valid PDF (...)", and a flaw it read
    # past needs no word at all.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("encrypted PDF (no password support)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files; all mean the same here
        raise DocumentError(f"not a valid PDF ({type(exc).__name__}: {exc})") from None
    if not any(p.strip() for p in pages):
        raise DocumentError("PDF has no extractable text (a scan without OCR?)")
    title, sections = "", []
    for number, page in enumerate(pages, start=1):
        doc = text_sections(page, title)
        title = title or doc.title
        for section in doc.sections:
            heading = section.heading if len(pages) == 1 else _path(section.heading, f"page {number}")
            sections.append(Section(heading, section.text))
    return LoadedDocument(title, tuple(sections))
