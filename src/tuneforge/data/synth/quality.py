"""Checks on what the teacher wrote, each with the reason a pair is dropped.

- ``too_short`` / ``too_long``: the prompt or the reply is outside the word bounds.
- ``unsupported``: too few of the reply's content words occur in the chunk it came
  from, so it is not answerable from the chunk (the teacher made it up).
- ``duplicate``: the prompt (normalised) was already written by this task, or is in
  a dataset named in ``dedup_against``.
- ``unchanged``: a paraphrase that is the original prompt again.
"""

from __future__ import annotations

import re

from tuneforge.data.dedup import normalize_exact

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = (
    "a an and are as at be but by can do does for from has have how i if in into is it its "
    "may more most no not of on or our so such than that the their them then there these "
    "they this to was we were what when where which who why will with would you your"
)
STOPWORDS = frozenset(_STOPWORDS.split(" "))


def words(text: str) -> list[str]:
    """Lower-cased words (letters and digits)."""
    return [w.lower() for w in _WORD.findall(text)]


def support(reply: str, chunk: str) -> float:
    """Share of the reply's content words (not stop words, 3+ letters or a digit) in the chunk."""
    content = [w for w in words(reply) if w not in STOPWORDS and (len(w) >= 3 or w.isdigit())]
    if not content:
        return 0.0
    found = set(words(chunk))
    return sum(1 for w in content if w in found) / len(content)


class PairFilter:
    """Keeps a task's pairs that pass every check; remembers the prompts it kept."""

    def __init__(
        self,
        min_words: int,
        max_words: int,
        min_support: float | None,
        seen: set[str] | None = None,
    ) -> None:
        self.min_words, self.max_words, self.min_support = min_words, max_words, min_support
        self.seen: set[str] = set(seen or ())

    def check(self, prompt: str, reply: str, chunk: str | None) -> str | None:
        """None when the pair is kept (and its prompt remembered), else the reason to drop it."""
        for text in (prompt, reply):
            count = len(words(text))
            if count < self.min_words:
                return "too_short"
            if count > self.max_words:
                return "too_long"
        checked = self.min_support is not None and chunk is not None
        if checked and support(reply, chunk) < self.min_support:
            return "unsupported"
        key = normalize_exact(prompt)
        if key in self.seen:
            return "duplicate"
        self.seen.add(key)
        return None
