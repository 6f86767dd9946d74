"""Read domain documents as titled sections of text, and turn them into text records.

Types: HTML (``.html``, ``.htm``), Markdown (``.md``, ``.markdown``), PDF (its
text layer; no OCR), DOCX and plain text (``.txt``). Each becomes a
:class:`Document`: a title and sections, each section a heading path and its
blocks (paragraphs, lists, tables, code). Headings come from ``<h1>``-``<h6>``,
Markdown ``#`` and underlined headings, DOCX ``Heading 1``-``Heading 9`` styles,
and a PDF's outline (bookmarks).

HTML loses its page chrome (navigation, headers, footers, scripts, forms,
link-dense blocks; :mod:`tuneforge.data.html_text`). Plain text and PDF text
layers are hard-wrapped: a paragraph's lines are joined into one line of prose
(list items keep their own lines), and a PDF's page numbers and the header and
footer lines repeated on most of its pages are dropped. Markdown keeps fenced
code blocks and tables as they are and links as their text.

:func:`document_records` chunks a document (:mod:`tuneforge.data.chunking`) into
``{"id", "text", "meta"}`` records, the form of the ``text`` format, for
:mod:`tuneforge.data.sources`. A file that cannot be read (corrupt, encrypted, no
text) becomes one record holding the reason, which the reader quarantines.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.data.chunking import MAX_TOKENS, OVERLAP_TOKENS, approx_tokens, chunk_document
from tuneforge.data.html_text import page_text
from tuneforge.data.messages import BadRecord

if TYPE_CHECKING:
    from tuneforge.data.sources import RawRecord

DOCUMENT_TYPES = {
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".docx": "docx",
    ".txt": "text",
}
# Why a readable file gave no text, by type: what the user can do about it.
_NO_TEXT = {
    "html": "no text left after boilerplate removal",
    "pdf": "no text layer (a scanned PDF?); OCR it first, tuneforge reads only the text layer",
}
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,9}[.)])\s+")


@dataclass
class Block:
    """A paragraph, list, table or code block; ``verbatim`` text is cut only between lines."""

    text: str
    verbatim: bool = False


@dataclass
class Section:
    """The blocks under one heading path (outermost heading first; empty before any heading)."""

    path: tuple[str, ...]
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    """A document's title, type (html, markdown, pdf, docx, text) and sections in order."""

    title: str
    doc_type: str
    sections: list[Section]


_NUMBER = re.compile(r"\d+")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?[-–]?\s*\d+\s*[-–]?(?:\s*(?:/|of)\s*\d+)?$", re.I)


class DocumentError(ValueError):
    """A document that cannot be read; ``reason`` says why, without the path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def read_document(path: str | Path) -> Document:
    """Read an HTML, Markdown, PDF, DOCX or plain-text file as a :class:`Document`.

    Raises:
        DocumentError: the file is of another type, unreadable (corrupt,
            encrypted, not UTF-8) or holds no text; the message names the file.
    """
    path = Path(path)
    doc_type = DOCUMENT_TYPES.get(path.suffix.lower())
    if doc_type is None:
        raise DocumentError(path, f"not a document; use one of {', '.join(DOCUMENT_TYPES)}")
    try:
        document = _READERS[doc_type](path)
    except OSError as err:
        raise DocumentError(path, f"cannot read the file ({err.strerror or err})") from None
    if not document.sections:
        raise DocumentError(path, _NO_TEXT.get(doc_type, "no text"))
    return document


def document_records(
    path: Path,
    name: str,
    *,
    max_tokens: int = MAX_TOKENS,
    overlap_tokens: int = OVERLAP_TOKENS,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> Iterator[RawRecord]:
    """One ``text`` record per chunk of the document at ``path``, shown as ``name``.

    Each record is ``{"id": "<name>#<n>", "text": chunk, "meta": {...}}`` at
    position ``n`` (1-based); ``meta`` holds ``source_file``, ``doc_title``,
    ``section`` (the heading path), ``chunk``, ``chunks`` and ``doc_type``. A
    document that cannot be read is one record at position 1 holding the reason.
    Chunking arguments are those of :func:`tuneforge.data.chunking.chunk_document`.
    """
    from tuneforge.data.sources import RawRecord

    try:
        document = read_document(path)
    except DocumentError as err:
        yield RawRecord(name, 1, BadRecord(err.reason), "")
        return
    chunks = chunk_document(document, max_tokens, overlap_tokens, count_tokens)
    for number, chunk in enumerate(chunks, 1):
        meta = {
            "source_file": name,
            "doc_title": document.title,
            "section": chunk.section,
            "chunk": number,
            "chunks": len(chunks),
            "doc_type": document.doc_type,
        }
        yield RawRecord(name, number, {"id": f"{name}#{number}", "text": chunk.text, "meta": meta})


class _Sections:
    """Gathers headings and blocks, in reading order, into sections by heading path."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []
        self.sections = [Section(())]
        self.first_title = ""  # the first top-level heading: the document's title if none given

    def heading(self, level: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        if level == 1 and not self.first_title:
            self.first_title = text
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        self.sections.append(Section(tuple(heading for _, heading in self.path)))

    def enter(self, path: tuple[str, ...]) -> None:
        """Continue in the section at ``path`` (a PDF bookmark's), unless already there."""
        if self.sections[-1].path != path:
            self.sections.append(Section(path))

    def block(self, text: str, verbatim: bool = False) -> None:
        text = text.strip("\n").rstrip() if verbatim else text.strip()
        if text:
            self.sections[-1].blocks.append(Block(text, verbatim))

    def document(self, title: str | None, doc_type: str, path: Path) -> Document:
        title = " ".join((title or self.first_title or path.stem).split())
        return Document(title, doc_type, [s for s in self.sections if s.blocks])


def _decode(path: Path, data: bytes | None = None) -> str:
    """A text file's content (a UTF-8 BOM dropped; line endings kept for splitlines)."""
    data = path.read_bytes() if data is None else data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DocumentError(
            path,
            f"invalid UTF-8: byte 0x{data[err.start]:02x} at byte {err.start + 1}; "
            "save it as UTF-8",
        ) from None


def _prose(lines: list[str]) -> str:
    """Hard-wrapped lines as one line of prose per paragraph; list items keep their lines.

    A word split by a hyphen at a line end is rejoined (PDF text layers wrap that way).
    """
    text = ""
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if not text:
            text = line
        elif _LIST_ITEM.match(line):
            text += "\n" + line
        elif text.endswith("-") and line[:1].islower() and text[-2:-1].isalpha():
            text = text[:-1] + line
        else:
            text += " " + line
    return text


def _paragraphs(text: str) -> list[str]:
    """Blank-line-separated paragraphs of plain text, each as :func:`_prose`."""
    return [_prose(part.splitlines()) for part in re.split(r"\n\s*\n", text) if part.strip()]


def _read_text(path: Path) -> Document:
    sections = _Sections()
    for paragraph in _paragraphs(_decode(path)):
        sections.block(paragraph)
    return sections.document(None, "text", path)


# -- HTML ---------------------------------------------------------------------------------------


def _decode_html(path: Path) -> str:
    """A page's text: UTF-8, or the charset its ``<meta>`` declares (older pages)."""
    data = path.read_bytes()
    with contextlib.suppress(DocumentError):
        return _decode(path, data)
    declared = re.search(rb"""<meta[^>]+charset=["']?([\w-]+)""", data[:4096], re.IGNORECASE)
    if declared:
        with contextlib.suppress(LookupError):  # a charset Python does not know
            return data.decode(declared.group(1).decode("ascii"), "replace")
    raise DocumentError(path, "not UTF-8 and no known charset declared; save it as UTF-8")


def _read_html(path: Path) -> Document:
    title, items = page_text(_decode_html(path))
    sections = _Sections()
    for item in items:
        if item.level:
            sections.heading(item.level, item.text)
        else:
            sections.block(item.text, item.verbatim)
    return sections.document(sections.first_title or title, "html", path)


# -- Markdown -----------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) and ![alt](src): keep the words
_FRONT_MATTER = re.compile(r"---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|$)", re.DOTALL)
_FRONT_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.MULTILINE)


class _Markdown:
    """Markdown lines into sections: headings, paragraphs, lists, tables, fenced code."""

    def __init__(self) -> None:
        self.sections = _Sections()
        self.lines: list[str] = []  # the open paragraph, list or table
        self.kind = ""  # of the open block: "p", "list" or "table"
        self.fence = ""
        self.code: list[str] = []

    def feed(self, line: str) -> None:
        if self.fence:
            self.code.append(line)
            closing = line.strip()
            if closing.startswith(self.fence) and set(closing) == {self.fence[0]}:
                self.sections.block("\n".join(self.code), verbatim=True)
                self.fence, self.code = "", []
        elif fence := _FENCE.match(line):
            self.flush()
            self.fence, self.code = fence.group(1), [line]
        elif heading := _ATX.match(line):
            self.flush()
            self.sections.heading(len(heading.group(1)), _LINK.sub(r"\1", heading.group(2) or ""))
        elif _SETEXT.match(line) and self.kind == "p":
            text, self.lines, self.kind = " ".join(self.lines), [], ""
            self.sections.heading(1 if "=" in line else 2, _LINK.sub(r"\1", text))
        elif not line.strip() or _RULE.match(line):
            self.flush()
        else:
            self._add(line)

    def _add(self, line: str) -> None:
        if _LIST_ITEM.match(line):
            kind = "list"
        elif line.lstrip().startswith("|"):
            kind = "table"
        elif self.kind == "list" and line[:1].isspace():
            self.lines[-1] += " " + line.strip()  # an item's continuation line
            return
        else:
            kind = "p"
        if kind != self.kind:
            self.flush()
        self.kind = kind
        self.lines.append(re.sub(r"^\s*>\s?", "", line) if kind == "p" else line.rstrip())

    def flush(self) -> None:
        if self.kind == "p":
            self.sections.block(_LINK.sub(r"\1", " ".join(s.strip() for s in self.lines)))
        elif self.kind:
            self.sections.block(_LINK.sub(r"\1", "\n".join(self.lines)), self.kind == "table")
        self.lines, self.kind = [], ""

    def finish(self) -> _Sections:
        if self.fence:  # an unclosed fence runs to the end of the file
            self.sections.block("\n".join(self.code), verbatim=True)
        self.flush()
        return self.sections


def _read_markdown(path: Path) -> Document:
    text = _decode(path)
    title = None
    if front := _FRONT_MATTER.match(text):  # YAML front matter: only its title is used
        found = _FRONT_TITLE.search(front.group(1))
        title = found.group(1) if found else None
        text = text[front.end() :]
    reader = _Markdown()
    for line in text.splitlines():
        reader.feed(line)
    return reader.finish().document(title, "markdown", path)


# -- PDF and DOCX -------------------------------------------------------------------------------


def _read_pdf(path: Path) -> Document:
    pages, title, starts = _pdf_text(path)
    sections = _Sections()
    for number, page in enumerate(_without_running_lines(pages)):
        heading = _page_heading(starts, number)
        sections.enter(heading)
        for paragraph in _paragraphs(_without_heading_line(page, heading)):
            sections.block(paragraph)
    return sections.document(title, "pdf", path)


def _pdf_text(path: Path) -> tuple[list[str], str, list[Any]]:
    """A PDF's page texts, its title and its bookmarks (see :func:`_outline_starts`)."""
    from pypdf import PasswordType, PdfReader

    log = logging.getLogger("pypdf")
    level = log.level
    log.setLevel(logging.ERROR)  # a damaged file's repair notes would flood the console
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise DocumentError(path, "encrypted PDF; remove its password and save it again")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str(reader.metadata.title or "") if reader.metadata else ""
        return pages, title, _outline_starts(reader, reader.outline, ())
    except DocumentError:
        raise
    except Exception as err:  # pypdf raises many types on damaged files; one must not stop all
        raise DocumentError(path, f"unreadable PDF ({type(err).__name__}: {err})") from None
    finally:
        log.setLevel(level)


def _page_heading(starts: list[Any], page: int) -> tuple[str, ...]:
    """The path of the last bookmark starting on or before ``page`` (outline order)."""
    found: tuple[int, tuple[str, ...]] = (-1, ())
    for start in starts:
        if found[0] <= start[0] <= page:
            found = start
    return found[1]


def _outline_starts(reader: Any, outline: list[Any], path: tuple[str, ...]) -> list[Any]:
    """``(first page index, heading path)`` of every bookmark, nested ones included."""
    starts: list[Any] = []
    previous: tuple[str, ...] = path
    for entry in outline:
        if isinstance(entry, list):
            starts += _outline_starts(reader, entry, previous)
            continue
        previous = (*path, " ".join(str(entry.title).split()))
        page = reader.get_destination_page_number(entry)
        if page is not None and page >= 0:
            starts.append((page, previous))
    return starts


def _without_running_lines(pages: list[str]) -> list[str]:
    """Pages without page numbers and the headers and footers repeated on most pages.

    Lines are compared with their numbers masked, so "Page 3" and "Page 4" are one
    running line; a line that is only a page number ("7", "- 7 -", "7 / 12", "Page 7
    of 12") goes wherever it is.
    """
    counts: dict[str, int] = {}
    for page in pages:
        for shape in {_shape(line) for line in page.splitlines() if line.strip()}:
            counts[shape] = counts.get(shape, 0) + 1
    running = {shape for shape, n in counts.items() if len(pages) >= 3 and n > len(pages) / 2}
    return [
        "\n".join(
            line
            for line in page.splitlines()
            if _shape(line) not in running and not _PAGE_NUMBER.match(line.strip())
        )
        for page in pages
    ]


def _shape(line: str) -> str:
    return _NUMBER.sub("#", line.strip())


def _without_heading_line(page: str, heading: tuple[str, ...]) -> str:
    """The page without its first line when that line is the bookmark's own title."""
    first, _, rest = page.lstrip().partition("\n")
    if heading and " ".join(first.split()) == heading[-1]:
        return rest
    return page


def _read_docx(path: Path) -> Document:
    import docx
    from docx.table import Table

    try:
        document = docx.Document(str(path))
        parts = list(document.iter_inner_content())
        title = document.core_properties.title
    except Exception as err:  # python-docx raises many types on damaged files
        raise DocumentError(path, f"unreadable DOCX ({type(err).__name__}: {err})") from None
    sections = _Sections()
    items: list[str] = []  # consecutive list paragraphs: one block
    for part in parts:
        is_table = isinstance(part, Table)
        style = "" if is_table or part.style is None else part.style.name or ""
        text = "" if is_table else part.text.strip()
        if items and not (style.startswith("List") and text):
            sections.block("\n".join(items))
            items = []
        if is_table:
            rows = (" | ".join(cell.text.strip() for cell in row.cells) for row in part.rows)
            sections.block("\n".join(rows), verbatim=True)
        elif heading := re.fullmatch(r"heading ?(\d)", style, re.IGNORECASE):
            sections.heading(int(heading.group(1)), text)
        elif style == "Title":
            title = title or text
        elif style.startswith("List"):
            items += [f"- {text}"] if text else []
        else:
            sections.block(text)
    if items:
        sections.block("\n".join(items))
    return sections.document(title, "docx", path)


_READERS: dict[str, Callable[[Path], Document]] = {
    "html": _read_html,
    "markdown": _read_markdown,
    "pdf": _read_pdf,
    "docx": _read_docx,
    "text": _read_text,
}
