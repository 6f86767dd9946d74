"""Find personal data and secrets in samples, and redact, drop or flag them.

Detection runs the validated regexes of :mod:`tuneforge.data.pii_patterns` (e-mail,
phone, card, IBAN, IPv4/IPv6, SSN, secrets, URLs with credentials). Overlapping
findings are resolved so that the most specific detector wins (a JWT inside a bearer
header, an IBAN over the card-like digits inside it), and among equally specific
ones the longest.

Names and postal addresses need a statistical model: the optional Presidio
backend (``presidio-analyzer``) adds them when it is installed and asked for.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from tuneforge.data.pii_patterns import DETECTORS, char_classes
from tuneforge.data.sample import Message, Sample
from tuneforge.data.steps import StepStats
from tuneforge.errors import ConfigError, DataError

Mode = Literal["redact", "drop", "flag"]
MODES = ("redact", "drop", "flag")
# Most sensitive first: a dropped sample's reason names the worst type it held.
TYPES = ("secret", "url_credentials", "credit_card", "ssn", "iban", "email", "phone", "ip_address")


@dataclass(frozen=True)
class Finding:
    """One piece of PII: ``text[start:end]`` is what a redaction replaces."""

    type: str
    detector: str
    start: int
    end: int
    priority: int

    @property
    def placeholder(self) -> str:
        return f"<{self.type.upper()}>"


def _resolve(findings: Iterable[Finding]) -> list[Finding]:
    """Keep non-overlapping findings: most specific first, then longest, then leftmost."""
    chosen: list[Finding] = []
    starts: list[int] = []
    for finding in sorted(findings, key=lambda f: (f.priority, f.start - f.end, f.start)):
        i = bisect.bisect(starts, finding.start)
        if i and chosen[i - 1].end > finding.start:
            continue
        if i < len(chosen) and chosen[i].start < finding.end:
            continue
        starts.insert(i, finding.start)
        chosen.insert(i, finding)
    return chosen


# The detectors' tests unpacked once, as detect runs them for every text. Every hint is looked
# up in the lower-cased text, in one scan: for a hint with capitals (AKIA) that test is weaker
# than the detector's, never stricter, and its regex still needs the capitals, so the findings
# are the same.
_PLAN = tuple(
    (d.type, d.needs, tuple(hint.lower() for hint in d.hints), d.gate, d) for d in DETECTORS
)


def detect(text: str, types: Collection[str] | None = None) -> list[Finding]:
    """Find PII in ``text``.

    Args:
        text: Any text.
        types: Types to look for (see :data:`TYPES`); all of them when None.

    Returns:
        Non-overlapping findings in text order.
    """
    lowered = text.lower()
    classes = char_classes(text)
    found = []
    for kind, needs, hints, gate, detector in _PLAN:
        if types is not None and kind not in types:
            continue
        # needs first: the cheapest test, and false only where nothing could be found.
        if needs is not None and not needs(text, classes):
            continue
        if hints and not any(map(lowered.__contains__, hints)):
            continue
        if gate is not None and not gate.search(lowered):
            continue
        for match in detector.pattern.finditer(text):
            span = detector.accept(match)
            if span is not None and span[0] < span[1]:
                found.append(Finding(detector.type, detector.name, *span, detector.priority))
    return _resolve(found)


def redact(text: str, findings: list[Finding]) -> str:
    """Replace each finding (non-overlapping, in text order) by its typed placeholder."""
    parts, last = [], 0
    for finding in findings:
        parts += [text[last : finding.start], finding.placeholder]
        last = finding.end
    parts.append(text[last:])
    return "".join(parts)


class PresidioBackend:
    """Names, locations and other entities from Presidio's analyzer (``presidio-analyzer``).

    Args:
        entities: Presidio entity types to report, e.g. ``PERSON``, ``LOCATION``.
        threshold: Minimum analyzer score to accept a finding.
        language: Language of the texts.

    Raises:
        DataError: presidio-analyzer is not installed.
    """

    priority = 9  # a statistical guess never overrides a validated structured finding

    def __init__(
        self,
        entities: tuple[str, ...] = ("PERSON", "LOCATION"),
        threshold: float = 0.6,
        language: str = "en",
    ) -> None:
        try:
            from presidio_analyzer import AnalyzerEngine
        except ImportError as err:
            raise DataError(
                "data.pii.presidio: presidio-analyzer is not installed; "
                "pip install presidio-analyzer (and a spaCy model), or turn the backend off"
            ) from err
        self.analyzer = AnalyzerEngine()
        self.entities = list(entities)
        self.threshold = threshold
        self.language = language

    def detect(self, text: str) -> list[Finding]:
        results = self.analyzer.analyze(text=text, entities=self.entities, language=self.language)
        return [
            Finding(r.entity_type.lower(), "presidio", r.start, r.end, self.priority)
            for r in results
            if r.score >= self.threshold
        ]


def _rewrite_message(message: Message, fn: Callable[[str], str]) -> Message:
    new = dict(message)
    content = message.get("content")
    if isinstance(content, str):
        new["content"] = fn(content)
    elif isinstance(content, list):
        new["content"] = [
            {**part, "text": fn(part["text"])}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        # Tool-call arguments leak as much as prose (send_email(to=...)); placeholders hold
        # no quote or backslash, so JSON arguments stay valid JSON.
        new["tool_calls"] = [_rewrite_call(call, fn) for call in calls]
    return new


def _rewrite_call(call: Any, fn: Callable[[str], str]) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": fn(function["arguments"])}}


# Message lists of a sample: the conversation (or a preference prompt) and both replies.
MESSAGE_FIELDS = ("messages", "chosen", "rejected")


def _rewrite(sample: Sample, fn: Callable[[str], str]) -> Sample:
    """``sample`` with ``fn`` applied to every text it holds (all roles).

    A copy when ``fn`` changed a text (returned another object); else ``sample`` itself,
    which spares copying the many samples that hold no PII.
    """
    changed = False

    def tracked(text: str) -> str:
        nonlocal changed
        new = fn(text)
        changed = changed or new is not text
        return new

    lists = {
        name: [_rewrite_message(m, tracked) for m in getattr(sample, name)]
        for name in MESSAGE_FIELDS
        if hasattr(sample, name)
    }
    text = tracked(sample.text) if isinstance(sample.text, str) else sample.text
    return dataclasses.replace(sample, text=text, **lists) if changed else sample


@dataclass
class PiiStep:
    """Redact, drop or flag samples holding PII (a :class:`~tuneforge.data.steps.Step`).

    Every message content (all roles, text parts and tool-call arguments) of chat,
    unpaired and preference samples (prompt, chosen and rejected) and the ``text`` of
    text samples is scanned.

    Attributes:
        mode: ``redact`` replaces each finding by a typed placeholder (``<EMAIL>``) and
            counts the sample as changed; ``drop`` drops the sample with reason
            ``pii:<type>`` naming its most sensitive type (order of :data:`TYPES`);
            ``flag`` keeps it unchanged but for ``meta["pii"]``, counts by type.
        types: Types to look for; all of :data:`TYPES` when None.
        presidio: Also run the Presidio backend (names, locations); needs presidio-analyzer.
        presidio_entities: Presidio entity types to report.
        counts_by_type: Findings by type over every sample seen, for the data report.
    """

    mode: Mode = "redact"
    types: Collection[str] | None = None
    presidio: bool = False
    presidio_entities: tuple[str, ...] = ("PERSON", "LOCATION")
    name: str = "pii"
    counts_by_type: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"data.pii.mode: {self.mode!r} is not one of {', '.join(MODES)}")
        unknown = sorted(set(self.types or ()) - set(TYPES))
        if unknown:
            raise ConfigError(f"data.pii.types: unknown {unknown}; choose from {', '.join(TYPES)}")
        self._backend = PresidioBackend(self.presidio_entities) if self.presidio else None

    def find(self, text: str) -> list[Finding]:
        """Findings in one text from the regex detectors and, if on, the Presidio backend."""
        findings = detect(text, self.types)
        if self._backend is not None:
            findings = _resolve(findings + self._backend.detect(text))
        return findings

    def scan(self, sample: Sample) -> tuple[Sample, Counter[str]]:
        """The sample with its findings redacted (in redact mode), and their counts by type."""
        found: Counter[str] = Counter()

        def scrub(text: str) -> str:
            findings = self.find(text)
            if not findings:  # most texts
                return text
            found.update(f.type for f in findings)
            return redact(text, findings) if self.mode == "redact" else text

        return _rewrite(sample, scrub), found

    def __call__(self, samples: Iterable[Sample], stats: StepStats) -> Iterator[Sample]:
        for sample in samples:
            stats.seen += 1
            redacted, found = self.scan(sample)
            self.counts_by_type.update(found)
            if not found:
                stats.kept += 1
                yield sample
            elif self.mode == "drop":
                stats.drop(sample, f"pii:{_most_sensitive(found)}")
            elif self.mode == "flag":
                stats.kept += 1
                yield dataclasses.replace(sample, meta={**sample.meta, "pii": dict(found)})
            else:
                stats.kept += 1
                stats.changed += 1
                yield redacted


def _most_sensitive(found: Counter[str]) -> str:
    return min(found, key=lambda t: (TYPES.index(t) if t in TYPES else len(TYPES), t))
