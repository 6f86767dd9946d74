"""Cut a document into chunks that fit a token budget, where its structure allows.

Rules, in order of preference: a chunk never crosses a section (a heading
starts a new chunk); a block (paragraph, list, table, code block) that fits in
the chunk being filled joins it, and one that fits a chunk of its own starts
the next chunk rather than being cut; a longer block is cut between lines, and
a prose line between sentences; only a sentence (or a code line) longer than
the whole budget is cut between words, and a word longer than that between
characters. Each chunk opens with its heading path (``Title > Section >
Subsection``) on a line of its own, so it stands alone, and the budget counts
that line. A chunk after the first in a section repeats the trailing sentences
of the one before it, up to ``overlap_tokens``, so no sentence loses all of its
context at a cut.

Tokens are counted by a callable; the default, :func:`approx_tokens`, needs no
tokenizer: 1.3 tokens per whitespace-separated word (typical of BPE vocabularies
on English prose; code and numbers run higher) and one per CJK character. Pass
a tokenizer's counter for exact budgets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuneforge.errors import DataError

if TYPE_CHECKING:
    from tuneforge.data.documents import Block, Document, Section

MAX_TOKENS = 512
OVERLAP_TOKENS = 64
TOKENS_PER_WORD = 1.3
BLOCK_BREAK, LINE_BREAK, SPACE = "\n\n", "\n", " "

# Ideographs, kana and hangul: written without spaces, about one token per character.
_WIDE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# A sentence ends at . ! ? or … (closing quotes and brackets included) before a space and a
# capital, digit or opening quote; or at a CJK full stop, which needs no space after it.
_SENTENCE_END = re.compile(
    r"(?:[.!?…][\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9À-ÖØ-Þ])|[。！？][”’」』)]*)(\s*)"
)
# Words whose full stop does not end a sentence ("e.g. Linux", "Dr. Lee"); single capitals
# (initials) count too.
_ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "cf",
        "vs",
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "jr",
        "sr",
        "no",
        "vol",
        "fig",
        "approx",
        "inc",
        "ltd",
        "al",
    ]
)


@dataclass
class Chunk:
    """One piece of a document, ready to be a text record.

    Attributes:
        text: The heading path on the first line, a blank line, then the body.
        section: The section's heading path, ``" > "``-joined (empty before any heading).
        tokens: ``text``'s length by the counter the chunks were cut with.
    """

    text: str
    section: str
    tokens: int


@dataclass(frozen=True)
class _Unit:
    """The smallest piece a chunk holds (a sentence, or a line of a list, table or code)."""

    text: str
    sep: str  # what joins it to the unit before it, unless it opens a chunk


def approx_tokens(text: str) -> int:
    """About how many tokens ``text`` is: 1.3 per word, 1 per CJK character, rounded up."""
    wide = 0 if text.isascii() else len(_WIDE.findall(text))  # isascii: a fast path in C
    words = len(_WIDE.sub(" ", text).split()) if wide else len(text.split())
    return math.ceil(words * TOKENS_PER_WORD) + wide


def chunk_document(
    doc: Document,
    max_tokens: int = MAX_TOKENS,
    overlap_tokens: int = OVERLAP_TOKENS,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> list[Chunk]:
    """Cut a document into chunks of at most ``max_tokens``, heading line included.

    Args:
        doc: The document, as :func:`tuneforge.data.documents.read_document` gives it.
        max_tokens: Budget per chunk, heading line and overlap included.
        overlap_tokens: At most this many tokens of trailing sentences of the chunk
            before (same section only) open the next one; 0 for none.
        count_tokens: Tokens in a text; :func:`approx_tokens` by default.

    Raises:
        DataError: the budget is below 16 tokens, or the overlap is not below half of it.
    """
    if max_tokens < 16 or not 0 <= overlap_tokens < max_tokens // 2:
        raise DataError(
            f"chunking: max_tokens {max_tokens} must be at least 16 and overlap_tokens "
            f"{overlap_tokens} between 0 and half of it; change the budget"
        )
    chunks = []
    for section in doc.sections:
        heading = _heading_line(doc.title, section, max_tokens // 2, count_tokens)
        packer = _Packer(heading, max_tokens, overlap_tokens, count_tokens)
        for block in section.blocks:
            packer.add(_units(block, packer.fits))
        for units in packer.finish():
            text = packer.render(units)
            chunks.append(Chunk(text, " > ".join(section.path), count_tokens(text)))
    return chunks


def _heading_line(title: str, section: Section, limit: int, count: Callable[[str], int]) -> str:
    """``Title > Heading > Subheading``, the title once, cut to at most ``limit`` tokens."""
    path = list(section.path)
    if path and title and path[0].casefold() == title.casefold():
        path = path[1:]  # the page's first heading is usually its title
    line = " > ".join(part for part in (title, *path) if part)
    if count(line) <= limit:
        return line
    return _cut(line.split(), SPACE, lambda text: count(text) <= limit)[0]


class _Packer:
    """Fills the chunks of one section, unit by unit, preferring to cut between blocks."""

    def __init__(self, heading: str, limit: int, overlap: int, count: Callable[[str], int]) -> None:
        self.heading, self.limit, self.overlap, self.count = heading, limit, overlap, count
        self.chunks: list[list[_Unit]] = []
        self.current: list[_Unit] = []

    def render(self, units: list[_Unit]) -> str:
        body = _body(units)
        return f"{self.heading}{BLOCK_BREAK}{body}" if self.heading else body

    def fits(self, units: list[_Unit]) -> bool:
        return self.count(self.render(units)) <= self.limit

    def add(self, block: list[_Unit]) -> None:
        """Add a block's units (each fits a chunk alone), closing chunks as they fill."""
        if self.fits(self.current + block):
            self.current += block
        elif self.fits(block):  # it fits a chunk of its own: start one rather than cut it
            self._close(block)
        else:
            while block:
                taken = self._most(block)
                self.current += block[:taken]
                if block := block[taken:]:
                    self._close(block[:1])
                    block = block[1:]

    def _most(self, units: list[_Unit]) -> int:
        """How many leading ``units`` still fit in the chunk being filled.

        A galloping search: counting costs grow with the text counted, so a unit at a
        time would make a chunk of k sentences cost k counts instead of about 2 log k.
        """
        low, high = 0, 1  # low units fit; high is the next count to try
        while high <= len(units) and self.fits(self.current + units[:high]):
            low, high = high, high * 2
        high = min(high, len(units) + 1)  # the fewest known not to fit (len + 1: all fit)
        while high - low > 1:
            middle = (low + high) // 2
            if self.fits(self.current + units[:middle]):
                low = middle
            else:
                high = middle
        return low

    def finish(self) -> list[list[_Unit]]:
        if self.current:
            self.chunks.append(self.current)
        return self.chunks

    def _close(self, following: list[_Unit]) -> None:
        """End the chunk being filled; the next opens with its overlap, then ``following``."""
        if self.current:
            self.chunks.append(self.current)
        self.current = self._overlap(following) + following

    def _overlap(self, following: list[_Unit]) -> list[_Unit]:
        """The trailing units of the last chunk within the overlap budget (never all of it)."""
        if not self.chunks or not self.overlap:
            return []
        taken: list[_Unit] = []
        for unit in reversed(self.chunks[-1][1:]):
            candidate = [unit, *taken]
            within = self.count(_body(candidate)) <= self.overlap
            if not (within and self.fits(candidate + following)):
                break
            taken = candidate
        return taken


def _body(units: list[_Unit]) -> str:
    """The units' text; the first one's separator is dropped, as it opens the chunk."""
    return "".join(unit.sep + unit.text for unit in units)[len(units[0].sep) :] if units else ""


def _units(block: Block, fits: Callable[[list[_Unit]], bool]) -> list[_Unit]:
    """A block's lines, prose lines as sentences, each cut further if it overflows a chunk."""
    units: list[_Unit] = []
    sep = BLOCK_BREAK
    for line in block.text.split("\n"):
        if block.verbatim and not line.strip():
            sep += LINE_BREAK  # a blank line in code stays, joined to the line after it
            continue
        pieces = [line] if block.verbatim else sentences(line)
        if pieces and not block.verbatim:
            pieces[0] = line[: len(line) - len(line.lstrip())] + pieces[0]  # a nested item's indent
        for index, sentence in enumerate(pieces):
            unit = _Unit(sentence, sep if index == 0 else SPACE)
            if fits([unit]):
                units.append(unit)
                continue
            pieces = _cut(sentence.split(), SPACE, lambda text: fits([_Unit(text, "")]))
            units += [_Unit(piece, unit.sep if i == 0 else SPACE) for i, piece in enumerate(pieces)]
        sep = LINE_BREAK
    return units


def sentences(line: str) -> list[str]:
    """The sentences of one line of prose, in order (an approximation; see the module)."""
    found, start = [], 0
    for match in _SENTENCE_END.finditer(line):
        word = line[start : match.start()].rsplit(maxsplit=1)[-1:] or [""]
        word = word[0].lstrip("(\"'“‘[").rstrip(".")
        if word.casefold() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
            continue
        if piece := line[start : match.start(1)].strip():
            found.append(piece)
        start = match.end(1)
    if piece := line[start:].strip():
        found.append(piece)
    return found


def _cut(parts: list[str], joiner: str, fits: Callable[[str], bool]) -> list[str]:
    """Join ``parts`` greedily into the fewest pieces that fit; a part too long alone is cut
    between characters, and a character that does not fit is kept whole (it has to go somewhere).
    """
    pieces: list[str] = []
    while parts:
        low, high = 1, len(parts)  # binary search: the most leading parts that fit together
        while low < high:
            middle = (low + high + 1) // 2
            if fits(joiner.join(parts[:middle])):
                low = middle
            else:
                high = middle - 1
        head = joiner.join(parts[:low])
        if low == 1 and joiner and not fits(head):
            pieces += _cut(list(head), "", fits)
        else:
            pieces.append(head)
        parts = parts[low:]
    return pieces
