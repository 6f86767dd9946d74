"""Input and output policies of the server: PII, blocklist, regexes, prompt length, JSON.

PII is found by the data layer's detectors (:func:`tuneforge.data.pii.detect`) and
replaced by its typed placeholders (:func:`tuneforge.data.pii.redact`), so the server
scrubs exactly what data preparation scrubs. JSON replies are parsed as eval parses
them (:func:`tuneforge.eval.structured.parse_json`).

A :class:`Verdict` says ``allow``, ``redact`` (use its text) or ``block``, and why: its
reasons are policy names and PII types (``pii:email``, ``blocklist``, ``regex:<name>``,
``max_input_tokens``, ``json_invalid``), never the text they matched; the log lines and
counters hold only those names and counts.

Output policies see whole texts: a streamed reply is checked once it is complete.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tuneforge.config.serve_schema import GuardrailsConfig
from tuneforge.data.pii import _rewrite_message, detect, redact
from tuneforge.eval.structured import parse_json

log = logging.getLogger(__name__)

Action = Literal["allow", "redact", "block"]
Side = Literal["input", "output"]
BLOCKLIST_PLACEHOLDER = "<REDACTED>"


@dataclass
class Verdict:
    """What a check decided, and why.

    Attributes:
        action: ``allow`` (nothing found), ``redact`` (use ``text``/``messages``, which
            hold placeholders), or ``block`` (refuse; ``text`` and ``messages`` are None).
        text: The checked text, redacted where a policy said so (None for messages).
        messages: The checked messages, redacted where a policy said so (None for text).
        reasons: Policies that matched, in order: names and PII types, never matched text.
        counts: Matches by ``(reason, action)``.
    """

    action: Action
    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    reasons: list[str] = field(default_factory=list)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Pattern:
    reason: str
    action: Literal["block", "redact"]
    regex: re.Pattern[str]
    placeholder: str


def _blocklist_pattern(words: Sequence[str]) -> re.Pattern[str] | None:
    """Whole words or phrases, any case; the longest alternative first."""
    if not words:
        return None
    alternatives = "|".join(re.escape(w.strip()) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class Guardrails:
    """The ``serve.guardrails`` policies, ready to check texts; thread-safe.

    Args:
        config: The guardrails section.
    """

    def __init__(self, config: GuardrailsConfig) -> None:
        self.config = config
        self._patterns: list[_Pattern] = []
        blocklist = _blocklist_pattern(config.blocklist)
        if blocklist is not None:
            self._patterns.append(
                _Pattern("blocklist", config.blocklist_action, blocklist, BLOCKLIST_PLACEHOLDER)
            )
        for policy in config.regex:
            flags = re.IGNORECASE if policy.ignore_case else 0
            self._patterns.append(
                _Pattern(
                    f"regex:{policy.name}",
                    policy.action,
                    re.compile(policy.pattern, flags),
                    f"<{policy.name.upper()}>",
                )
            )
        self._pii_types = frozenset(config.pii_types) if config.pii_types is not None else None
        self._stats: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def check_input(
        self,
        prompt: str | Sequence[dict[str, Any]],
        token_count: int | None = None,
        request_id: str = "",
    ) -> Verdict:
        """Check a prompt: its length, then PII, blocklist and regexes (if applied to input).

        Args:
            prompt: The prompt text, or OpenAI chat messages (every role's content, text
                parts and tool-call arguments are checked).
            token_count: The rendered prompt's length in tokens, for ``max_input_tokens``.
            request_id: Named in the log line.
        """
        limit = self.config.max_input_tokens
        if limit is not None and token_count is not None and token_count > limit:
            too_long = Counter({("max_input_tokens", "block"): 1})
            return self._finish("input", Verdict("block", counts=too_long), request_id)
        counts: Counter[tuple[str, str]] = Counter()
        scan = "input" in self.config.apply_to
        if isinstance(prompt, str):
            text = self._scan(prompt, counts) if scan else prompt
            verdict = Verdict("allow", text=text, counts=counts)
        else:
            messages = [dict(m) for m in prompt]
            if scan:
                messages = [_rewrite_message(m, lambda t: self._scan(t, counts)) for m in messages]
            verdict = Verdict("allow", messages=messages, counts=counts)
        return self._finish("input", verdict, request_id)

    def check_output(self, text: str, json_mode: bool = False, request_id: str = "") -> Verdict:
        """Check a reply: PII, blocklist and regexes (if applied to output), then JSON.

        Args:
            text: The whole generated text of one choice.
            json_mode: The request's ``response_format`` asks for JSON: with
                ``check_json`` on, a reply that is not a JSON object is blocked, and one
                wrapped in a ```json fence is unwrapped.
            request_id: Named in the log line.
        """
        counts: Counter[tuple[str, str]] = Counter()
        if "output" in self.config.apply_to:
            text = self._scan(text, counts)
        if json_mode and self.config.check_json:
            value = parse_json(text)
            if not isinstance(value, dict):  # UNPARSED included
                counts["json_invalid", "block"] += 1
            elif not _bare_json(text):
                text = json.dumps(value, ensure_ascii=False)
        return self._finish("output", Verdict("allow", text=text, counts=counts), request_id)

    def stats(self) -> dict[tuple[str, str, str], int]:
        """Checks in which a policy acted, by ``(side, reason, action)``, for metrics."""
        with self._lock:
            return dict(self._stats)

    def _scan(self, text: str, counts: Counter[tuple[str, str]]) -> str:
        """``text`` after the blocklist, regex and PII policies; matches go into ``counts``."""
        for pattern in self._patterns:
            if pattern.action == "redact":
                text, found = pattern.regex.subn(lambda _, p=pattern.placeholder: p, text)
            else:
                found = sum(1 for _ in pattern.regex.finditer(text))
            if found:
                counts[pattern.reason, pattern.action] += found
        if self.config.pii != "off":
            findings = detect(text, self._pii_types)
            for finding in findings:
                counts[f"pii:{finding.type}", self.config.pii] += 1
            if findings and self.config.pii == "redact":
                text = redact(text, findings)
        return text

    def _finish(self, side: Side, verdict: Verdict, request_id: str) -> Verdict:
        """Decide the action from the counts, record them, and log names and counts only."""
        actions = {action for _, action in verdict.counts}
        verdict.action = "block" if "block" in actions else "redact" if actions else "allow"
        verdict.reasons = list(dict.fromkeys(reason for reason, _ in verdict.counts))
        if verdict.action == "block":
            verdict.text = verdict.messages = None
        if verdict.action == "allow":
            return verdict
        with self._lock:
            self._stats.update((side, reason, action) for reason, action in verdict.counts)
        summary = ", ".join(f"{r}/{a}={n}" for (r, a), n in verdict.counts.items())
        log.info(
            "guardrails: %s %s%s (%s)",
            side,
            verdict.action,
            f" request {request_id}" if request_id else "",
            summary,
        )
        return verdict


def _bare_json(text: str) -> bool:
    """Whether ``text`` is JSON as it stands (no fence around it)."""
    try:
        json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return False
    return True
