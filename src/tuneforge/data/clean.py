"""Cleaning steps: normalisation, markup stripping, length, quality, language and toxicity filters.

Each function here is small and pure; the step classes apply them to every text
of a sample (message contents of chat samples, ``text`` of text samples) and
count what they changed or dropped, by reason.
"""

from __future__ import annotations

import dataclasses
import html
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from html.parser import HTMLParser
from importlib import resources

from tuneforge.data.sample import Sample
from tuneforge.data.steps import StepStats

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\ufeff]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+", re.UNICODE)


# ASCII bytes _CONTROL removes; a text without any (most) skips the regex scan.
_ASCII_CONTROL = bytes(b for b in range(128) if _CONTROL.match(chr(b)))


def normalize_text(text: str) -> str:
    """NFC, unified line endings, no control or zero-width characters, tidy blank lines."""
    text = unicodedata.normalize("NFC", text)
    # Each rewrite below is skipped when a C-level find shows it has nothing to do: a
    # regex scan costs far more than a find, and most texts are already tidy.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii() or _holds_ascii_control(text):
        text = _CONTROL.sub("", text).replace("\u00a0", " ")
    if " \n" in text or "\t\n" in text:
        text = _TRAILING_SPACE.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def _holds_ascii_control(text: str) -> bool:
    data = text.encode("ascii")
    return len(data.translate(None, _ASCII_CONTROL)) != len(data)


class _TextOnly(HTMLParser):
    """Collects the text of an HTML fragment, skipping script and style contents."""

    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._skip += tag in {"script", "style"}
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in {"script", "style"} and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")


def strip_markup(text: str) -> str:
    """Remove HTML tags (keeping their text) and unescape entities; plain text is unchanged."""
    if not _TAG.search(text):
        return html.unescape(text) if "&" in text else text
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    return normalize_text("".join(parser.parts))


def duplicate_line_ratio(text: str) -> float:
    """Share of non-empty lines that repeat an earlier line (boilerplate, scraped menus)."""
    lines = [line for line in map(str.strip, text.splitlines()) if line]
    return 1 - len(set(lines)) / len(lines) if lines else 0.0


# Not a letter, digit, space or common punctuation (``_`` counts as a symbol); regexes
# keep the per-character work in C, which matters at millions of documents.
_SYMBOL = re.compile(r"[^\w\s.,;:!?'\"()\[\]{}/-]|_")
# For ASCII text, bytes.translate counts the same characters faster still: deleting every
# byte but the symbols leaves the symbols; deleting the whitespace leaves the visible ones.
_ASCII_NOT_SYMBOL = bytes(b for b in range(128) if not _SYMBOL.match(chr(b)))
_ASCII_SPACE = bytes(b for b in range(128) if chr(b).isspace())
# Lower-cases ASCII word characters (``\w``) and turns every other byte into a space.
_ASCII_WORDS = bytes(
    ord(chr(b).lower()) if b < 128 and _WORD.fullmatch(chr(b)) else 32 for b in range(256)
)


def symbol_ratio(text: str) -> float:
    """Share of non-space characters that are neither letters, digits nor common punctuation."""
    if text.isascii():
        data = text.encode("ascii")
        visible = len(data.translate(None, _ASCII_SPACE))
        symbols = len(data.translate(None, _ASCII_NOT_SYMBOL))
    else:
        visible = sum(map(len, text.split()))
        symbols = len(_SYMBOL.findall(text))
    return symbols / visible if visible else 0.0


def _lower_words(text: str) -> list[str] | list[bytes]:
    """The ``\\w+`` runs of the lower-cased text (as bytes for ASCII text, which compare alike)."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORDS).split()
    return _WORD.findall(text.lower())


def repeated_word_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of word n-grams that are repeats of an earlier n-gram (degenerate repetition)."""
    return _ngram_ratio(_lower_words(text), n)


def _ngram_ratio(words: list[str] | list[bytes], n: int) -> float:
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    return 1 - len(set(grams)) / len(grams) if len(grams) >= 4 else 0.0


def _too_repetitive(text: str, limit: float, n: int = 3) -> bool:
    """Whether :func:`repeated_word_ngram_ratio` exceeds ``limit``, mostly without n-grams.

    N-grams with different first words differ, so the distinct words among the first ones
    bound the distinct n-grams from below and the ratio from above. A set of words costs a
    fraction of a set of tuples, and ordinary prose passes on the bound alone.
    """
    words = _lower_words(text)
    grams = len(words) - n + 1
    if n >= 1 and grams >= 4 and 1 - len(set(words[:grams])) / grams <= limit:
        return False
    return _ngram_ratio(words, n) > limit


@cache
def _wordlist(name: str) -> frozenset[str]:
    text = resources.files("tuneforge.data.wordlists").joinpath(name).read_text("utf-8")
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip() and w[0] != "#")


def profanity_count(text: str, words: frozenset[str] | None = None) -> int:
    """How many words of ``text`` are on the profanity list (whole words, case-insensitive)."""
    words = _wordlist("profanity_en.txt") if words is None else words
    return sum(w in words for w in _WORD.findall(text.lower()))


def texts_of(sample: Sample) -> list[str]:
    """Every text a sample carries (message contents, or its text)."""
    if sample.kind == "text":
        return [sample.text or ""]
    return [m.get("content") or "" for m in sample.messages]


def map_texts(sample: Sample, fn: Callable[[str], str]) -> tuple[Sample, bool]:
    """Apply ``fn`` to every text of a sample; returns the new sample and whether it changed."""
    if sample.kind == "text":
        new = fn(sample.text or "")
        return (
            (dataclasses.replace(sample, text=new), True) if new != sample.text else (sample, False)
        )
    messages, changed = [], False
    for message in sample.messages:
        content = message.get("content")
        if isinstance(content, str):
            new = fn(content)
            changed |= new != content
            message = {**message, "content": new}
        messages.append(message)
    return (dataclasses.replace(sample, messages=messages), True) if changed else (sample, False)


@dataclasses.dataclass
class TextMapStep:
    """Rewrite every text of every sample with ``fn``; count samples changed."""

    name: str
    fn: Callable[[str], str]

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        for sample in samples:
            stats.seen += 1
            new, changed = map_texts(sample, self.fn)
            stats.kept += 1
            stats.changed += changed
            yield new


@dataclasses.dataclass(frozen=True)
class QualityRules:
    """Thresholds of the quality filter; ``None`` switches a rule off."""

    min_chars: int | None = 1
    max_chars: int | None = None
    max_duplicate_line_ratio: float | None = 0.5
    max_symbol_ratio: float | None = 0.5
    max_repeated_ngram_ratio: float | None = 0.7
    languages: tuple[str, ...] | None = None
    max_profanity: int | None = None
    extra_words: frozenset[str] = frozenset()
    classifier: Callable[[str], float] | None = None
    classifier_threshold: float = 0.5


def quality_problem(sample: Sample, rules: QualityRules) -> str | None:
    """The first rule a sample breaks, as a drop reason, or None when it passes."""
    text = "\n".join(texts_of(sample))
    return (
        _shape_problem(text, rules)
        or _language_problem(text, rules)
        or _toxicity_problem(text, rules)
    )


def _shape_problem(text: str, rules: QualityRules) -> str | None:
    """Length, duplicate lines, symbols and repetition, in that order; cheapest first."""
    if rules.min_chars is not None and len(text.strip()) < rules.min_chars:
        return "too_short"
    if rules.max_chars is not None and len(text) > rules.max_chars:
        return "too_long"
    limit = rules.max_duplicate_line_ratio
    if limit is not None and duplicate_line_ratio(text) > limit:
        return "duplicate_lines"
    if rules.max_symbol_ratio is not None and symbol_ratio(text) > rules.max_symbol_ratio:
        return "symbols"
    limit = rules.max_repeated_ngram_ratio
    if limit is not None and _too_repetitive(text, limit):
        return "repetition"
    return None


def _language_problem(text: str, rules: QualityRules) -> str | None:
    if not rules.languages:
        return None
    from tuneforge.data.language import detect_language

    language, _ = detect_language(text)
    return None if language in rules.languages else f"language:{language}"


def _toxicity_problem(text: str, rules: QualityRules) -> str | None:
    if rules.max_profanity is not None:
        words = _wordlist("profanity_en.txt") | rules.extra_words
        if profanity_count(text, words) > rules.max_profanity:
            return "profanity"
    if rules.classifier is not None and rules.classifier(text) >= rules.classifier_threshold:
        return "toxicity"
    return None


@dataclasses.dataclass
class QualityFilter:
    """Drop samples that break a quality rule, with the rule as the reason."""

    rules: QualityRules
    name: str = "quality"

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        for sample in samples:
            stats.seen += 1
            reason = quality_problem(sample, self.rules)
            if reason is None:
                stats.kept += 1
                yield sample
            else:
                stats.drop(sample, reason)
