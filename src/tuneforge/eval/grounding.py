"""Grounding check: numbers and names in an answer that neither its input nor reference holds.

A hallucinated figure, name or order number is the error a reader is least likely to
catch, and for reference-based tasks (summaries, extraction, support replies) every
such fact should come from the input or the reference. This check is a heuristic
without a model, so it is fast, transparent and runs in every eval:

* **Numbers** written with digits, normalised so ``1,000`` equals ``1000`` and ``3.50``
  equals ``3.5``. Sources may spell small numbers as words (``three``, ``a dozen``).
  A list marker (``1.`` or ``2)`` opening a line) is not a fact and is skipped.
* **Codes**: tokens of capitals and digits such as ``ORD-1234``, ``A320`` or
  ``COVID-19``; ``ORD-1234`` matches ``ord1234`` (case and separators are ignored).
* **Named entities**: runs of capitalised words (``Acme Corp``, ``Bank of England``),
  minus a sentence's first word, plus all-caps acronyms (``NASA``). One is grounded
  when each of its words occurs in some source, case-insensitively.

Limits: a name that opens a sentence is missed (``Paris is ...``); capitalised
common words inside a sentence (title case, shouting) are flagged; numbers spelled
as words in the answer are not checked; an entity whose words all occur in the
sources, but apart, passes; paraphrased quantities (``half`` for ``50%``) are flagged.
Use it as a flag for review, not as a verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-_/][A-Za-z0-9]+)*")
_CAPITALISED = r"[A-Z][A-Za-z'’\-]*[a-z][A-Za-z'’\-]*"
# Lower-case particles inside names: "Bank of England", "Ludwig van Beethoven".
_PARTICLE = r"(?:of|the|de|da|di|du|van|von|der|del|la|le|al|bin)"
_ENTITY = re.compile(rf"\b{_CAPITALISED}(?: (?:{_PARTICLE} )*{_CAPITALISED})*")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")
_WORD = re.compile(r"[a-z0-9]+")
_POSSESSIVE = re.compile(r"['’]s\b")
_LINE_START = re.compile(r"^\s*(?:[-*+•>#]+|\d+[.)])?\s*[\"'“‘\[(*_]*$")
_OPENING = re.compile(r"[\s\"'“‘\[(*_]+$")
_QUOTES = frozenset("\"'“‘")
# Titles name no one by themselves; after one, "Dr. Smith" does not start a sentence.
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "sir"})
_ABBREVIATIONS = _TITLES | {"vs", "e.g", "i.e"}
# All-caps words that are not facts a source has to hold.
_COMMON_CAPS = frozenset({"OK", "AM", "PM", "PS", "FAQ", "ID", "TIP", "NOTE", "TL", "DR"})
_SMALL_NUMBERS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip
# Sources may spell a number the answer writes in digits.
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(_SMALL_NUMBERS)} | {
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "dozen": "12",
    "first": "1",
    "second": "2",
    "third": "3",
}


class Term(NamedTuple):
    """A checkable fact of an answer: its kind, its text there, and the form compared."""

    kind: str  # number, code or entity
    text: str
    key: str


def ungrounded(answer: str, sources: Sequence[str]) -> list[str]:
    """The numbers, codes and named entities of ``answer`` that no source contains.

    Args:
        answer: A model reply.
        sources: The texts the answer may draw on (the input, the reference).

    Returns:
        The ungrounded terms as written in the answer, in order, each once.
    """
    return [term.text for term in ungrounded_terms(answer, sources)]


def ungrounded_terms(answer: str, sources: Sequence[str]) -> list[Term]:
    """Like :func:`ungrounded`, with each term's kind (``number``, ``code`` or ``entity``)."""
    known = _Known(sources)
    found: list[Term] = []
    seen: set[tuple[str, str]] = set()
    for term in _terms(answer):
        if (term.kind, term.key) in seen or known.has(term):
            continue
        seen.add((term.kind, term.key))
        found.append(term)
    return found


def grounding_report(
    answers: Sequence[str],
    inputs: Sequence[str],
    references: Sequence[str | None],
    *,
    max_examples: int = 20,
) -> dict[str, Any]:
    """Flag the answers that hold numbers or names absent from their input and reference.

    Args:
        answers: Model replies.
        inputs: The prompt text of each answer (a conversation's messages joined).
        references: The reference answer of each, or None where there is none.
        max_examples: How many flagged answers to return, most ungrounded terms first.

    Returns:
        ``answers``, ``flagged``, ``flagged_rate``, ``ungrounded`` (term counts by kind)
        and ``examples`` (``index``, ``answer``, ``ungrounded``).
    """
    if not len(answers) == len(inputs) == len(references):
        raise ValueError("grounding_report: answers, inputs and references differ in length")
    counts = {"number": 0, "code": 0, "entity": 0}
    flagged: list[dict[str, Any]] = []
    for index, (answer, text, reference) in enumerate(
        zip(answers, inputs, references, strict=True)
    ):
        terms = ungrounded_terms(answer, [text] if reference is None else [text, reference])
        for term in terms:
            counts[term.kind] += 1
        if terms:
            flagged.append(
                {"index": index, "answer": answer, "ungrounded": [t.text for t in terms]}
            )
    flagged.sort(key=lambda example: -len(example["ungrounded"]))
    return {
        "answers": len(answers),
        "flagged": len(flagged),
        "flagged_rate": round(len(flagged) / len(answers), 4) if answers else 0.0,
        "ungrounded": counts,
        "examples": flagged[:max_examples],
    }


class _Known:
    """What the sources mention, in the forms the answer's terms are compared in."""

    def __init__(self, sources: Sequence[str]) -> None:
        text = "\n".join(sources)
        lowered = _POSSESSIVE.sub("", text.lower())
        self.words = set(_WORD.findall(lowered))
        self.numbers = {_number_key(m.group()) for m in _NUMBER.finditer(text)}
        self.numbers |= {_NUMBER_WORDS[w] for w in self.words if w in _NUMBER_WORDS}
        tokens = _TOKEN.findall(text)
        self.codes = {_code_key(token) for token in tokens}
        # the digits of a source's code still ground a bare number ("order 1234")
        for token in tokens:
            if any(c.isalpha() for c in token):
                self.numbers |= {_number_key(d) for d in re.findall(r"\d+", token)}

    def has(self, term: Term) -> bool:
        if term.kind == "number":
            return term.key in self.numbers
        if term.kind == "code":
            return term.key in self.codes
        return all(self._has_word(word) for word in term.key.split())

    def _has_word(self, word: str) -> bool:
        # a plural of a source's word ("Germans", "APIs") is grounded by it
        return word in self.words or (word.endswith("s") and word[:-1] in self.words)


def _terms(answer: str) -> Iterator[Term]:
    """Every number, code and named entity of ``answer``, in order of appearance."""
    codes = [m for m in _TOKEN.finditer(answer) if _is_code(m.group())]
    taken = [(m.start(), m.end()) for m in codes]
    found = [(m.start(), Term("code", m.group(), _code_key(m.group()))) for m in codes]
    for match in _NUMBER.finditer(answer):
        inside_code = any(start <= match.start() < end for start, end in taken)
        if not inside_code and not _is_list_marker(answer, match):
            found.append((match.start(), Term("number", match.group(), _number_key(match.group()))))
    for match in _ACRONYM.finditer(answer):
        inside_code = any(start <= match.start() < end for start, end in taken)
        if not inside_code and match.group() not in _COMMON_CAPS:
            found.append((match.start(), Term("entity", match.group(), match.group().lower())))
    for match in _ENTITY.finditer(answer):
        entity = _entity(answer, match)
        if entity is not None:
            found.append(entity)
    return (term for _, term in sorted(found, key=lambda pair: pair[0]))


def _entity(answer: str, match: re.Match[str]) -> tuple[int, Term] | None:
    """The entity a run of capitalised words names, without a sentence's first word."""
    start, text = match.start(), match.group()
    if _starts_sentence(answer, start):
        _, _, rest = text.partition(" ")
        # "The Bank of England" → "Bank of England"; a particle cannot open a name
        rest = re.sub(rf"^(?:{_PARTICLE} )+", "", rest)
        if not rest:
            return None
        start, text = start + len(text) - len(rest), rest
    words = _WORD.findall(_POSSESSIVE.sub("", text.lower()))
    key = " ".join(w for w in words if w not in _TITLES and not re.fullmatch(_PARTICLE, w))
    return (start, Term("entity", _POSSESSIVE.sub("", text), key)) if key else None


def _starts_sentence(text: str, start: int) -> bool:
    """Whether ``start`` opens a sentence, a line, a list item or a quotation."""
    line = text[text.rfind("\n", 0, start) + 1 : start]
    if _LINE_START.match(line):
        return True
    opening = _OPENING.search(line)
    if opening and _QUOTES & set(opening.group()):
        return True
    before = line[: opening.start()] if opening else line
    if not before or before[-1] not in ".!?:;…":
        return False
    last_word = before[:-1].rsplit(None, 1)[-1].lower() if before[:-1].strip() else ""
    return last_word not in _ABBREVIATIONS


def _is_code(token: str) -> bool:
    """Capitals and digits together (``ORD-1234``, ``A320``), no lower-case letters."""
    return (
        any(c.isdigit() for c in token)
        and any(c.isupper() for c in token)
        and not any(c.islower() for c in token)
    )


def _is_list_marker(text: str, match: re.Match[str]) -> bool:
    """``1.`` or ``2)`` followed by a space at the start of a line."""
    if text[text.rfind("\n", 0, match.start()) + 1 : match.start()].strip():
        return False
    after = text[match.end() : match.end() + 2]
    return len(after) == 2 and after[0] in ".)" and after[1].isspace()


def _number_key(number: str) -> str:
    """``1,000.50`` → ``1000.5``: the digits' value, whatever the grouping and trailing zeros."""
    try:
        return format(Decimal(number.replace(",", "")).normalize(), "f")
    except InvalidOperation:
        return number


def _code_key(token: str) -> str:
    return re.sub(r"[-_/]", "", token.upper())
