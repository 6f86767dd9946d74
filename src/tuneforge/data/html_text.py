"""The text of an HTML page without its chrome: headings and blocks, boilerplate dropped.

Dropped: ``nav``, ``aside``, ``script``, ``style``, ``form`` and the like;
hidden elements; ARIA navigation, banner, footer and search regions; ``header``
and ``footer`` outside an ``article`` or ``main`` (inside one they hold the
article's own title or notes). When a page has an ``article`` or ``main``, only
their text is kept. A paragraph, list or table whose visible text is mostly
link text (menus, tag clouds, link lists) is dropped too. Kept: headings,
paragraphs, lists (one line per item, ``-`` or ``1.``), tables (one line per
row, cells joined by `` | ``) and preformatted text as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

LINK_DENSITY = 0.7  # a block with more of its text inside links than this is navigation
_DROPPED_TAGS = frozenset(
    [
        "nav",
        "aside",
        "script",
        "style",
        "form",
        "noscript",
        "template",
        "svg",
        "iframe",
        "button",
        "select",
        "textarea",
        "object",
        "canvas",
        "dialog",
    ]
)
_PAGE_CHROME = frozenset({"header", "footer"})  # boilerplate, unless inside article/main
_DROPPED_ROLES = frozenset(
    ["navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog"]
)
_CONTENT_TAGS = frozenset({"article", "main"})
_HEADING_TAGS = {f"h{level}": level for level in range(1, 7)}
_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "section",
        "blockquote",
        "figure",
        "figcaption",
        "dl",
        "dt",
        "dd",
        "address",
        "details",
        "summary",
        "center",
        "body",
        "hr",
        "header",
        "footer",
        "table",
    ]
)
_VOID_TAGS = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    ]
)


@dataclass
class PageItem:
    """A heading (``level`` > 0) or block of a page, with what tells boilerplate apart."""

    text: str
    level: int = 0
    verbatim: bool = False
    chars: int = 0  # visible characters, spaces excluded
    link_chars: int = 0  # of which inside <a>
    in_content: bool = False  # inside <article> or <main>


class _HtmlText(HTMLParser):
    """The headings and blocks of an HTML page, page chrome skipped (see the module)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[PageItem] = []
        self.title = ""
        self._skip_tag, self._skip_depth = "", 0
        self._text: list[str] = []
        self._chars = self._links = 0
        self._in_title = False
        self._anchors = self._pre = self._content = 0
        self._heading = 0
        self._lists: list[int | None] = []  # per open list: the item number (ol) or None (ul)
        self._marker = ""  # the marker of the list item just opened, for its first line
        self._lines: list[str] = []  # lines of the open list or table
        self._counts = [0, 0]  # visible and link characters of the open list or table
        self._cells: list[str] = []
        self._table = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_tag:
            self._skip_depth += tag == self._skip_tag
            return
        if tag not in _VOID_TAGS and self._boilerplate(tag, dict(attrs)):
            self._flush()
            self._skip_tag, self._skip_depth = tag, 1
        elif tag == "title":
            self._in_title = True
        elif tag == "a":
            self._anchors += 1
        elif tag == "br":
            self._text.append("\n")
        elif tag == "li" and self._lists:
            self._flush()
            number = self._lists[-1]
            if number is not None:
                self._lists[-1] = number = number + 1
            self._marker = f"{number}." if number is not None else "-"
        elif tag in ("ul", "ol"):
            self._flush()
            self._lists.append(0 if tag == "ol" else None)
        else:
            self._open_block(tag)

    def _open_block(self, tag: str) -> None:
        if tag in _HEADING_TAGS or tag in _CONTENT_TAGS or tag in _BLOCK_TAGS or tag == "pre":
            self._flush()
        self._heading = _HEADING_TAGS.get(tag, self._heading)
        self._content += tag in _CONTENT_TAGS
        self._pre += tag == "pre"
        self._table += tag == "table"

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag:
            self._skip_depth -= tag == self._skip_tag
            if not self._skip_depth:
                self._skip_tag = ""
            return
        if tag == "title":
            self._in_title = False
        elif tag == "a":
            self._anchors = max(0, self._anchors - 1)
        elif tag in ("td", "th"):
            self._flush()
        elif tag == "tr" and self._cells:
            self._lines.append(" | ".join(self._cells))
            self._cells = []
        elif tag in ("ul", "ol", "table") or tag in _HEADING_TAGS:
            self._flush()
            self._close_group(tag)
        elif tag in _CONTENT_TAGS or tag in _BLOCK_TAGS or tag in ("pre", "li"):
            self._flush()
            self._content -= tag in _CONTENT_TAGS and self._content > 0
            self._pre -= tag == "pre" and self._pre > 0

    def handle_data(self, data: str) -> None:
        if self._skip_tag:
            return
        if self._in_title:
            self.title += data
            return
        self._text.append(data if self._pre else re.sub(r"\s+", " ", data))
        visible = len(data) - sum(map(str.isspace, data))
        self._chars += visible
        self._links += visible if self._anchors else 0

    def close(self) -> None:
        super().close()
        self._flush()
        if self._lines:  # a list or table left open at the end of the page
            self._emit("\n".join(self._lines), bool(self._table), *self._counts)

    def _boilerplate(self, tag: str, attrs: dict[str, str | None]) -> bool:
        role = (attrs.get("role") or "").lower()
        style = (attrs.get("style") or "").replace(" ", "").lower()
        return (
            tag in _DROPPED_TAGS
            or (tag in _PAGE_CHROME and not self._content)
            or role in _DROPPED_ROLES
            or "hidden" in attrs
            or attrs.get("aria-hidden") == "true"
            or "display:none" in style
        )

    def _flush(self) -> None:
        """End the text being gathered: a heading, a table cell, a list line or a block."""
        raw, chars, links = "".join(self._text), self._chars, self._links
        self._text, self._chars, self._links = [], 0, 0
        if self._pre:
            text = raw.strip("\n")
        else:
            text = "\n".join(line.strip() for line in raw.split("\n") if line.strip())
        if not text.strip():
            return
        if self._heading:
            self.items.append(PageItem(text, self._heading, in_content=self._content > 0))
        elif self._table or self._lists:
            self._counts[0] += chars
            self._counts[1] += links
            if self._table:
                self._cells.append(text.replace("\n", " "))
            else:
                indent = "  " * (len(self._lists) - 1)
                marker, self._marker = self._marker or " ", ""
                self._lines.append(f"{indent}{marker} {text}")
        else:
            self._emit(text, self._pre > 0, chars, links)

    def _close_group(self, tag: str) -> None:
        """End a heading, a list or a table; a group's lines become one block when it closes."""
        if tag in _HEADING_TAGS:
            self._heading = 0
            return
        if tag == "table":
            self._table = max(0, self._table - 1)
        elif self._lists:
            self._lists.pop()
        if self._lines and not self._lists and not self._table:
            chars, links = self._counts
            self._emit("\n".join(self._lines), tag == "table", chars, links)
            self._lines, self._counts = [], [0, 0]

    def _emit(self, text: str, verbatim: bool, chars: int = 0, links: int = 0) -> None:
        self.items.append(PageItem(text, 0, verbatim, chars, links, self._content > 0))


def page_text(markup: str) -> tuple[str, list[PageItem]]:
    """The ``<title>`` of a page and its headings and blocks in order, boilerplate dropped."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    items = parser.items
    if any(item.in_content for item in items):
        items = [item for item in items if item.in_content]
    kept = [item for item in items if item.level or item.link_chars <= LINK_DENSITY * item.chars]
    return " ".join(parser.title.split()), kept
