"""Data audit for bias: demographic terms and the sentiment words around them, per source.

One pass over the samples counts, per source and per demographic group (``gender.female``,
``religion.muslim``, ...): the samples that mention the group, the group's term
occurrences, and the positive and negative words that share a sentence with a mention.
Sentences are split at ``.``, ``!``, ``?`` or ``;`` followed by a space, and at line
breaks; each message is split on its own, so a sentence never spans two turns. A sentence
that mentions a group adds all of its positive and negative words to that group once,
however many of the group's terms it holds.

Two kinds of finding are flagged, each only above a minimum count so small numbers never
flag:

* **Representation**: within a dimension, the most mentioned group appears in more than
  ``REPRESENTATION_RATIO`` times as many samples as the least mentioned one (or the least
  is absent), and the most mentioned group is in at least ``MIN_MENTIONS`` samples.
* **Negative association**: a group's negative rate, ``negative / (positive + negative)``,
  exceeds the pooled rate of the dimension's other groups by more than
  ``NEGATIVE_RATE_GAP``, with at least ``MIN_COOCCUR`` sentiment words on both sides.

The word lists (``wordlists/demographics_en.txt``, ``sentiment_*_en.txt``) are small,
English and curated; the dimensions follow the eval-time bias probes
(:mod:`tuneforge.eval.bias`). The counts say where to look, not what a text means:
"she fixed the terrible bug" counts a negative word for ``female``, and negation is not
read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from tuneforge.data.sample import Sample
from tuneforge.errors import DataError

# Defaults chosen so a flag needs both a large difference and enough evidence: a 2:1
# split over 20+ samples, or a 25-point gap in negative rate over 10+ sentiment words.
REPRESENTATION_RATIO = 2.0  # most / least mentioned group of a dimension, in samples
MIN_MENTIONS = 20  # samples mentioning the most mentioned group
NEGATIVE_RATE_GAP = 0.25  # a group's negative rate minus its dimension's other groups'
MIN_COOCCUR = 10  # sentiment words near the group, and near the other groups
ALL_SOURCES = "all sources"
NOTE = (
    "Counts come from small English word lists matched as whole words, per source; a "
    "group's positive and negative words are those in the same sentence as a mention. "
    "The audit shows where the data talks about some groups more often, or more "
    "negatively, than about others. It cannot tell intent, sarcasm, negation ('not "
    "lazy' counts as negative) or who a word is about, it misses groups and languages "
    "the lists do not name, and a word with another sense ('man page') is counted too. "
    "A flag is a place to read samples, not a verdict."
)

_SENTENCE_END = re.compile(r"[.!?;]+(?=\s|$)|\n")
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_HEADER = re.compile(r"\[([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\]")
_POSSESSIVE = "'s"
Key = tuple[str, str]  # (dimension, group)
Table = tuple[list[str], list[list[Any]]]  # (header, rows), as in the data report


@dataclass(frozen=True)
class Thresholds:
    """When a difference is flagged; the defaults are the module constants."""

    representation_ratio: float = REPRESENTATION_RATIO
    min_mentions: int = MIN_MENTIONS
    negative_rate_gap: float = NEGATIVE_RATE_GAP
    min_cooccur: int = MIN_COOCCUR


@dataclass(frozen=True)
class Lexicon:
    """Demographic groups (dimension -> group -> words) and the sentiment words."""

    groups: dict[str, dict[str, frozenset[str]]]
    positive: frozenset[str]
    negative: frozenset[str]


@dataclass
class GroupCounts:
    """What one source says about one group."""

    samples: int = 0
    mentions: int = 0
    positive: int = 0
    negative: int = 0

    def add(self, other: GroupCounts) -> None:
        """Add another source's counts (for the all-sources totals)."""
        self.samples += other.samples
        self.mentions += other.mentions
        self.positive += other.positive
        self.negative += other.negative


@dataclass
class _SourceCounts:
    samples: int = 0
    groups: dict[Key, GroupCounts] = field(default_factory=dict)


def load_lexicon(extra: Sequence[str | Path] = ()) -> Lexicon:
    """The bundled word lists, with the groups of the user's files added.

    Args:
        extra: Files in the format of ``wordlists/demographics_en.txt`` (``[dimension.group]``
            headers, one word per line); their words join the groups of the same name,
            and new names add groups.

    Raises:
        DataError: a file is missing or malformed; the message names the file and line.
    """
    groups = _parse_groups(_bundled("demographics_en.txt"), "demographics_en.txt (bundled)")
    for path in extra:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as err:
            raise DataError(f"bias audit: cannot read {path}: {err.strerror}") from None
        for dimension, named in _parse_groups(text, str(path)).items():
            for group, words in named.items():
                groups.setdefault(dimension, {}).setdefault(group, set()).update(words)
    positive = frozenset(_words_of(_bundled("sentiment_positive_en.txt")))
    negative = frozenset(_words_of(_bundled("sentiment_negative_en.txt")))
    lexicon = Lexicon(
        {d: {g: frozenset(w) for g, w in named.items()} for d, named in groups.items()},
        positive,
        negative,
    )
    _check_disjoint(lexicon)
    return lexicon


@cache
def _bundled(name: str) -> str:
    return resources.files("tuneforge.data.wordlists").joinpath(name).read_text("utf-8")


def _words_of(text: str) -> list[str]:
    return [w.strip().lower() for w in text.splitlines() if w.strip() and w[0] != "#"]


def _parse_groups(text: str, name: str) -> dict[str, dict[str, set[str]]]:
    groups: dict[str, dict[str, set[str]]] = {}
    current: set[str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().lower()
        if not line or line.startswith("#"):
            continue
        where = f"bias audit: {name} line {number}"
        if line.startswith("["):
            header = _HEADER.fullmatch(line)
            if not header:
                raise DataError(f"{where}: expected a header like [gender.female], got {raw!r}")
            current = groups.setdefault(header[1], {}).setdefault(header[2], set())
        elif current is None:
            raise DataError(f"{where}: word {raw.strip()!r} before any [dimension.group] header")
        elif not _WORD.fullmatch(line):
            raise DataError(f"{where}: {raw.strip()!r} is not one word (letters, ' or -)")
        else:
            current.add(line)
    return groups


def _check_disjoint(lexicon: Lexicon) -> None:
    """A word in two groups of a dimension, or also a sentiment word, would count twice."""
    both = lexicon.positive & lexicon.negative
    if both:
        raise DataError(f"bias audit: {sorted(both)[0]!r} is both a positive and a negative word")
    for dimension, named in lexicon.groups.items():
        seen: dict[str, str] = {}
        for group, words in named.items():
            for word in sorted(words):
                if word in seen:
                    raise DataError(
                        f"bias audit: {word!r} is in both {dimension}.{seen[word]} and "
                        f"{dimension}.{group}; keep it in one group"
                    )
                if word in lexicon.positive or word in lexicon.negative:
                    raise DataError(
                        f"bias audit: {word!r} ({dimension}.{group}) is also a sentiment word"
                    )
                seen[word] = group


def source_name(sample: Sample) -> str:
    """The source a sample is counted under: ``meta["source_name"]``, else its file."""
    named = sample.meta.get("source_name")
    if named:
        return str(named)
    file, _, line = sample.source.rpartition(":")
    return (file if file and line.isdigit() else sample.source) or "(unknown)"


def sample_texts(sample: Sample) -> list[str]:
    """Every text of a sample: its text, or each message's (prompt, chosen, rejected)."""
    if sample.kind == "text":
        return [sample.text or ""]
    messages = [*sample.messages, *sample.chosen, *sample.rejected]
    return [m["content"] for m in messages if isinstance(m.get("content"), str)]


class BiasAudit:
    """Demographic mentions and their sentiment co-occurrence, added one sample at a time.

    Memory is a fixed set of counters per source, whatever the number of samples.
    """

    def __init__(
        self, lexicon: Lexicon | None = None, thresholds: Thresholds | None = None
    ) -> None:
        """Set up the counters.

        Args:
            lexicon: The word lists; :func:`load_lexicon` by default.
            thresholds: When to flag; the module constants by default.
        """
        self.lexicon = lexicon or load_lexicon()
        self.thresholds = thresholds or Thresholds()
        self._keys = [(d, g) for d, named in self.lexicon.groups.items() for g in named]
        self._index: dict[str, list[Key]] = {}
        for dimension, group in self._keys:
            for word in self.lexicon.groups[dimension][group]:
                self._index.setdefault(word, []).append((dimension, group))
        self._known = self._index.keys() | self.lexicon.positive | self.lexicon.negative
        self._sources: dict[str, _SourceCounts] = {}

    def add(self, sample: Sample) -> None:
        """Count one sample under its source (see :func:`source_name`)."""
        name = source_name(sample)
        counts = self._sources.get(name)
        if counts is None:
            counts = self._sources[name] = self._empty()
        counts.samples += 1
        mentioned: set[Key] = set()
        for text in sample_texts(sample):
            for sentence in _SENTENCE_END.split(text.lower()):
                mentioned |= self._sentence(self._words(sentence), counts.groups)
        for key in mentioned:
            counts.groups[key].samples += 1

    def _empty(self) -> _SourceCounts:
        return _SourceCounts(0, {key: GroupCounts() for key in self._keys})

    def _words(self, sentence: str) -> list[str]:
        """Lower-case words without a possessive 's; unknown hyphenated words in parts."""
        words: list[str] = []
        for word in _WORD.findall(sentence.replace("\u2019", "'")):
            word = word.removesuffix(_POSSESSIVE)
            # "muslim-majority" still mentions a group; "able-bodied" as a listed word would not
            words += word.split("-") if "-" in word and word not in self._known else [word]
        return words

    def _sentence(self, words: list[str], groups: dict[Key, GroupCounts]) -> set[Key]:
        """Count one sentence's mentions and sentiment; returns the groups it mentions."""
        here: set[Key] = set()
        for word in words:
            for key in self._index.get(word, ()):
                groups[key].mentions += 1
                here.add(key)
        if here:
            positive = sum(w in self.lexicon.positive for w in words)
            negative = sum(w in self.lexicon.negative for w in words)
            for key in here:
                groups[key].positive += positive
                groups[key].negative += negative
        return here

    def result(self) -> dict[str, Any]:
        """The audit as JSON-able data, sources in name order.

        Returns:
            ``thresholds``; ``sources``: per source ``samples`` and ``dimensions`` ->
            group -> ``samples``, ``samples_pct``, ``mentions``, ``positive``,
            ``negative``, ``negative_rate`` (None without sentiment words); ``all``: the
            same for every source together; ``flags``: findings as sentences, per source
            and then (with two or more sources) for all sources together.
        """
        names = sorted(self._sources)
        total = self._empty()
        for name in names:
            total.samples += self._sources[name].samples
            for key, counts in self._sources[name].groups.items():
                total.groups[key].add(counts)
        flags = [f for n in names for f in self._flags(f"source {n}", self._sources[n])]
        if len(names) > 1:
            flags += self._flags(ALL_SOURCES, total)
        return {
            "thresholds": asdict(self.thresholds),
            "sources": {name: self._scope(self._sources[name]) for name in names},
            "all": self._scope(total),
            "flags": flags,
        }

    def _scope(self, counts: _SourceCounts) -> dict[str, Any]:
        dimensions: dict[str, dict[str, Any]] = {}
        for dimension, group in self._keys:
            row = counts.groups[dimension, group]
            scored = row.positive + row.negative
            dimensions.setdefault(dimension, {})[group] = {
                "samples": row.samples,
                "samples_pct": round(100 * row.samples / counts.samples, 2)
                if counts.samples
                else 0.0,
                "mentions": row.mentions,
                "positive": row.positive,
                "negative": row.negative,
                "negative_rate": round(row.negative / scored, 4) if scored else None,
            }
        return {"samples": counts.samples, "dimensions": dimensions}

    def _flags(self, scope: str, counts: _SourceCounts) -> list[str]:
        flags: list[str] = []
        for dimension, named in self.lexicon.groups.items():
            rows = {group: counts.groups[dimension, group] for group in named}
            flags += _representation(scope, dimension, rows, counts.samples, self.thresholds)
            flags += _negative(scope, dimension, rows, self.thresholds)
        return flags


def _representation(
    scope: str, dimension: str, rows: dict[str, GroupCounts], samples: int, limits: Thresholds
) -> list[str]:
    """One flag when the dimension's most mentioned group outnumbers its least mentioned."""
    if len(rows) < 2:
        return []
    most = max(rows, key=lambda g: rows[g].samples)
    least = min(rows, key=lambda g: rows[g].samples)
    high, low = rows[most].samples, rows[least].samples
    # absence is the largest imbalance, so the least mentioned group may have no samples;
    # only the larger side needs enough samples for the ratio to mean something
    if high < limits.min_mentions or (low and high / low <= limits.representation_ratio):
        return []
    why = f"ratio {high / low:.1f} > {limits.representation_ratio:g}" if low else "not mentioned"
    return [
        f"{scope}: {dimension}: '{least}' mentioned in {_pct(low, samples)} of samples vs "
        f"'{most}' in {_pct(high, samples)} ({why})"
    ]


def _negative(
    scope: str, dimension: str, rows: dict[str, GroupCounts], limits: Thresholds
) -> list[str]:
    """A flag per group whose negative rate exceeds that of the dimension's other groups."""
    flags = []
    for group, row in rows.items():
        others = GroupCounts()
        for other, counts in rows.items():
            if other != group:
                others.add(counts)
        scored, other_scored = row.positive + row.negative, others.positive + others.negative
        if scored < limits.min_cooccur or other_scored < limits.min_cooccur:
            continue
        rate, other_rate = row.negative / scored, others.negative / other_scored
        if rate - other_rate > limits.negative_rate_gap:
            flags.append(
                f"{scope}: {dimension}: negative co-occurrence rate for '{group}' {rate:.2f} "
                f"({row.negative} of {scored}) vs {other_rate:.2f} for the dimension's other "
                f"groups ({others.negative} of {other_scored}; gap > {limits.negative_rate_gap:g})"
            )
    return flags


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


def audit_samples(samples: Iterable[Sample], lexicon: Lexicon | None = None) -> dict[str, Any]:
    """:meth:`BiasAudit.result` for ``samples``, with the default thresholds."""
    audit = BiasAudit(lexicon)
    for sample in samples:
        audit.add(sample)
    return audit.result()


_HEADER_ROW = ["dimension", "group", "samples %", "mentions", "+", "\u2212", "negative rate"]


def tables(result: dict[str, Any]) -> list[tuple[str, Table]]:
    """The audit as titled (header, rows) tables: the flags, then one per source.

    All sources together come first among the per-source tables when there are two or
    more. A table lists only the groups its source mentions.
    """
    flags: Table = (["finding"], [[flag] for flag in result["flags"]])
    return [("Bias audit: flags", flags)] + [
        (f"Bias audit: {title}", table) for title, table in _source_tables(result)
    ]


def _source_tables(result: dict[str, Any]) -> list[tuple[str, Table]]:
    scopes = [(f"source {name}", body) for name, body in result["sources"].items()]
    if len(scopes) > 1:
        scopes.insert(0, (ALL_SOURCES, result["all"]))
    return [
        (f"{title} ({body['samples']} samples)", (_HEADER_ROW, _rows(body)))
        for title, body in scopes
    ]


def _rows(body: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            dimension,
            group,
            f"{row['samples_pct']:.1f}",
            row["mentions"],
            row["positive"],
            row["negative"],
            "-" if row["negative_rate"] is None else f"{row['negative_rate']:.2f}",
        ]
        for dimension, named in body["dimensions"].items()
        for group, row in named.items()
        if row["mentions"]
    ]


def markdown(result: dict[str, Any]) -> str:
    """The audit as Markdown for the data report: the note, the flags, the tables.

    Headings are level 3, to sit under the report's own ``## Data audit for bias``.
    """
    flags = "\n".join(f"- {flag}" for flag in result["flags"]) or _no_flags(result)
    parts = [NOTE, "### Flags", flags]
    for title, (header, rows) in _source_tables(result):
        parts.append(f"### {title[:1].upper()}{title[1:]}")
        if not rows:
            parts.append("No demographic terms found.")
            continue
        lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _no_flags(result: dict[str, Any]) -> str:
    t = result["thresholds"]
    return (
        f"None: no representation ratio above {t['representation_ratio']:g} (with "
        f"{t['min_mentions']}+ samples) and no negative-rate gap above "
        f"{t['negative_rate_gap']:g} (with {t['min_cooccur']}+ sentiment words)."
    )
