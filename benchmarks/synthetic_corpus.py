"""A deterministic synthetic corpus with planted duplicates and planted PII, for benchmarks.

:func:`generate` (or :func:`iter_documents`, which streams) yields documents of 0.5-4 KB of
English-like prose built from sentence templates over word lists. Ground truth travels with each
:class:`Document`:

* ``duplicate_of`` / ``duplicate_kind``: about 5% of documents are exact copies of an earlier
  original (half of them differ only in case or whitespace) and about 15% are near copies, edited
  by word substitutions, insertions and deletions, sentence swaps and a boilerplate header or
  footer. Two thirds are light (0.2-1.5% of words edited, one at least; about 80% of them keep a
  5-word-shingle Jaccard of 0.8 with the original), a third heavy (5-10%, Jaccard 0.3-0.75):
  related documents that a near-duplicate filter at 0.8 must keep. Judge a filter by the exact
  Jaccard of each copy with its original (``benchmarks.dedup.planted_duplicates`` does). A copy
  always comes after its original.
* ``pii``: about 10% of documents carry one to three sentences with an e-mail address, phone
  number, Luhn-valid credit-card number, IPv4 address or IBAN (valid check digits), each with its
  exact offsets. Dates, version numbers and order ids appear in ordinary sentences as hard
  negatives.

Only the standard library and numpy are used; the same ``(n, seed)`` gives the same corpus on
every machine. Run as a script to print a summary: ``python -m benchmarks.synthetic_corpus``.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

EXACT_SHARE, NEAR_SHARE, PII_SHARE, HEAVY_SHARE = 0.05, 0.15, 0.10, 0.3
MIN_BYTES, MAX_BYTES = 500, 4000


def _words(text: str, sep: str | None = None) -> list[str]:
    """Split a word list (or a ``sep``-separated phrase list), normalising whitespace."""
    return [" ".join(item.split()) for item in text.split(sep)]


_NOUNS = _words(
    """
garden kitchen river bridge window letter market station harbour village teacher
doctor engineer farmer painter student neighbour library museum hospital factory bakery office
printer ladder bicycle camera lantern blanket basket bottle bucket candle carpet chair clock
compass curtain drawer engine fence folder hammer helmet jacket kettle ladle lamp map mirror
needle notebook oven parcel pencil piano pillow plate pocket radio ribbon rope saddle scarf
shovel spoon stamp suitcase table ticket towel trolley trumpet umbrella vase wallet wheel
whistle apple bean biscuit bread butter cabbage carrot cheese cherry coffee cookie garlic honey
lemon melon noodle onion orange pepper potato pumpkin salad sauce soup tomato forest meadow
valley mountain island canyon desert glacier lagoon orchard pasture prairie quarry ridge shore
spring stream swamp thicket tunnel volcano weather storm cloud breeze thunder rainbow frost
festival concert meeting lesson journey holiday wedding parade lecture contract invoice report
budget schedule project deadline proposal survey recipe puzzle story rumour question answer
promise mistake lighthouse tractor satellite telescope microscope robot battery cable keyboard
monitor router sensor signal server network planet comet galaxy crystal fossil mineral magnet
engine_room cathedral courtyard balcony chimney cellar attic corridor staircase workshop"""
)
_VERBS = _words(
    """
admired adjusted borrowed built carried cleaned collected cooked copied counted covered
delivered described designed discovered dropped emptied explored fixed folded followed found
gathered grabbed guarded handed hid ignored improved inspected joined kept launched lifted loaded
locked measured mended moved noticed opened ordered packed painted planted polished pulled pushed
questioned raised reached recorded repaired replaced rescued returned sealed searched shared
shook signed sold sorted stacked started stirred studied tested tied touched traded trimmed
unlocked unpacked visited washed watched weighed welcomed wrapped wrote"""
)
_ADJECTIVES = _words(
    """
ancient bright broken busy calm careful cheerful clever cold crowded curious damp
dark dusty early empty enormous faint famous fragile fresh friendly gentle golden grey heavy
hidden hollow honest huge humble icy idle jolly keen large late lazy little lively lonely loud
lucky modern muddy narrow neat noisy odd old orange patient plain polite proud quiet rapid rare
rough rusty shallow sharp shiny silent simple sleepy slow small smooth soft solid sour steady
strange sturdy sudden sweet tall tidy tiny warm weary wet wide wild wise wooden young"""
)
_ADVERBS = _words(
    """
carefully quickly quietly slowly eagerly gently happily loudly nearly neatly
patiently politely proudly rarely roughly safely seldom sharply silently simply softly soon
steadily suddenly swiftly warmly wisely calmly boldly briefly"""
)
_NAMES = _words(
    """
Ada Bruno Chiara Dmitri Elena Farid Greta Hiro Ines Jonas Kamala Liam Maya Nikos Olga
Pablo Quinn Rosa Samir Tove Umar Vera Wendell Ximena Yusuf Zofia Anton Beatriz Cormac Dalia
Emeka Fiona Gustav Hana Ivo Jasmin Kofi Lena Mateo Nadia"""
)
_SURNAMES = _words(
    """
Abbott Becker Castillo Dubois Eriksen Fischer Garcia Haddad Ivanova Jensen Kowalski
Larsen Moreau Novak Okafor Petrov Quinlan Rossi Schmidt Tanaka Ueda Varga Weber Yilmaz
Zielinski"""
)
_PLACES = _words(
    """
near the old mill|behind the station|across the river|at the edge of town|in the
back room|under the bridge|on the top floor|beside the harbour|outside the library|along the
northern road|in the village square|past the orchard""",
    "|",
)
_TIMES = _words(
    """
at dawn|after lunch|late that evening|on Tuesday morning|before the storm|during the
festival|in early spring|the following week|just after midnight|by the end of the month|on a
quiet Sunday|before anyone noticed""",
    "|",
)
# Slots: N noun, A adjective, V verb (past), D adverb, P person, L place, T time, # number.
_TEMPLATES = (
    "The A N V the N L.",
    "P V a A N T.",
    "T, P D V the A N.",
    "Nobody expected the N to be so A, but P V it anyway.",
    "In the A N L, the N V D.",
    "P and P V the N while the A N waited L.",
    "It was A and A when the N finally arrived.",
    "Everyone agreed that the N was A, even though P V it T.",
    "The N that P V L turned out to be A.",
    "Somewhere L, a A N V the N D.",
    "P said the N looked A, so the team V it again.",
    "After the N was V, P D V the A N L.",
    "Order ##### of the A N was V on 2024-0#-1#.",
    "The N was V in version #.#.# of the A N.",
    "P counted # A N and V them T.",
)
_HEADERS = (
    "Weekly digest | Community notes and updates from around the district",
    "Posted in General Discussion | Estimated reading time four minutes",
    "Archive copy | This page was saved from the original newsletter",
)
_FOOTERS = (
    "You are receiving this message because you subscribed to the weekly digest. "
    "To change how often you hear from us, update your preferences on the settings page.",
    "Copyright the Village Review. All rights reserved. Reproduction without permission "
    "is not allowed, and quotations must link back to the original article.",
    "Thanks for reading. Share this story with a friend who might enjoy it, and "
    "come back next week for another round of local news.",
)
_DOMAINS = ("example.com", "mail.example.org", "post.example.net", "inbox.example.co.uk")
_PII_SENTENCES = {
    "email": ("You can reach NAME at {}.", "Send the signed form to {} before Friday."),
    "phone": ("Call the front desk on {} if the door is locked.", "NAME left {} as a contact."),
    "credit_card": ("The deposit was charged to card {}.", "NAME paid with the card {} yesterday."),
    "ipv4": ("The camera at {} stopped answering at noon.", "Requests came from {} all night."),
    "iban": ("Please transfer the fee to {}.", "The refund goes back to account {}."),
}
_LETTERS = tuple("ABCDEFGHJKLMNPRSTUVWXYZ")
_IBAN_FORMATS = {"DE": "n8n10", "GB": "a4n14", "FR": "n10a1n12", "NL": "a4n10", "ES": "n20"}


@dataclass(frozen=True)
class PiiSpan:
    """A planted piece of personal data: its type, its exact text, and its offsets."""

    kind: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """One synthetic document and the ground truth planted in it.

    Attributes:
        id: ``doc-000042``.
        text: The document.
        duplicate_of: Id of the original this is a copy of (None for originals).
        duplicate_kind: ``exact`` or ``near`` for copies.
        edits: What was done to a copy, e.g. ``("words:0.021", "swap", "header")``.
        pii: The planted personal data, in order of appearance.
    """

    id: str
    text: str
    duplicate_of: str | None = None
    duplicate_kind: str | None = None
    edits: tuple[str, ...] = ()
    pii: tuple[PiiSpan, ...] = field(default=())


@dataclass
class Corpus:
    """A generated corpus: the documents in stream order and the planted duplicate groups."""

    documents: list[Document]

    def groups(self) -> list[list[str]]:
        """Planted duplicate groups, each ``[original, copies...]`` in stream order."""
        members: dict[str, list[str]] = {}
        for doc in self.documents:
            if doc.duplicate_of is not None:
                members.setdefault(doc.duplicate_of, [doc.duplicate_of]).append(doc.id)
        return list(members.values())


def _compile(template: str) -> list[tuple[list[str], str]]:
    """Split a template into (word pool, trailing text) per word; literals are one-word pools."""
    pools = {"N": _NOUNS, "A": _ADJECTIVES, "V": _VERBS, "D": _ADVERBS, "P": _NAMES}
    pools |= {"L": _PLACES, "T": _TIMES}
    parts = []
    for word in template.split():
        stem = word.rstrip(".,")
        pool = [w.replace("_", " ") for w in pools.get(stem, [stem])]
        parts.append((pool, word[len(stem) :]))
    return parts


_COMPILED = tuple(_compile(t) for t in _TEMPLATES)


def _sentence(parts: list[tuple[list[str], str]], draws: list[int]) -> str:
    words = [
        pool[draw % len(pool)] + tail for (pool, tail), draw in zip(parts, draws, strict=False)
    ]
    text = " ".join(words)
    if "#" in text:
        digits = iter(str(draws[-1]).replace("0", "7") * 2)
        text = "".join(next(digits) if c == "#" else c for c in text)
    return text[0].upper() + text[1:]


def _base_sentences(seed: int, index: int) -> list[str]:
    """The sentences of original ``index``: a pure function of ``(seed, index)``."""
    rng = np.random.default_rng([seed, index])
    target = int(rng.integers(MIN_BYTES + 60, MAX_BYTES - 400))
    # Sentences average ~55 bytes; draw enough for the longest target at once.
    kinds = rng.integers(0, len(_COMPILED), target // 25).tolist()
    draws = rng.integers(10**8, 10**9, (len(kinds), 16)).tolist()
    sentences, size = [], 0
    for kind, row in zip(kinds, draws, strict=True):
        if size >= target:
            break
        sentences.append(_sentence(_COMPILED[kind], row))
        size += len(sentences[-1]) + 1
    return sentences


def _paragraphs(sentences: list[str], rng: np.random.Generator) -> str:
    cuts = np.cumsum(rng.integers(3, 7, len(sentences)))
    paras, start = [], 0
    for cut in cuts:
        if start >= len(sentences):
            break
        paras.append(" ".join(sentences[start : int(cut)]))
        start = int(cut)
    return "\n\n".join(paras)


def _edit_words(sentences: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Substitute, insert or delete about ``rate`` of the words (in equal shares)."""
    out = []
    for sentence in sentences:
        words = sentence.split()
        draws = rng.random(len(words))
        kept: list[str] = []
        for word, draw in zip(words, draws, strict=True):
            if draw < rate / 3:
                kept.append(_NOUNS[int(draw * 1e9) % len(_NOUNS)])
            elif draw < 2 * rate / 3:
                kept += [word, _ADJECTIVES[int(draw * 1e9) % len(_ADJECTIVES)]]
            elif draw >= rate:
                kept.append(word)
        out.append(" ".join(kept) if kept else sentence)
    return out


def _near_copy(sentences: list[str], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Edit words (light: 0.2-1.5%, heavy: 5-10%), swap sentences, add boilerplate."""
    heavy = rng.random() < HEAVY_SHARE
    rate = float(rng.uniform(0.05, 0.10) if heavy else rng.uniform(0.002, 0.015))
    edits = [f"words:{rate:.3f}"]
    edited = _edit_words(sentences, rate, rng)
    if edited == sentences:
        # A light rate can miss every word of a short text; a near copy differs in one at least.
        i = int(rng.integers(len(sentences)))
        edited[i] = f"{edited[i]} {_pick(rng, _NOUNS)}"
    sentences = edited
    for _ in range(int(rng.integers(0, 4 if heavy else 2)) if len(sentences) > 1 else 0):
        i = int(rng.integers(len(sentences) - 1))
        sentences[i], sentences[i + 1] = sentences[i + 1], sentences[i]
        edits.append("swap")
    if rng.random() < 0.3:
        sentences = [_HEADERS[int(rng.integers(len(_HEADERS)))], *sentences]
        edits.append("header")
    if rng.random() < 0.3:
        sentences = [*sentences, _FOOTERS[int(rng.integers(len(_FOOTERS)))]]
        edits.append("footer")
    return sentences, edits


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(map(str, rng.integers(0, 10, n).tolist()))


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _iban(rng: np.random.Generator) -> str:
    country = _pick(rng, list(_IBAN_FORMATS))
    bban = ""
    for part in _IBAN_FORMATS[country].replace("a", " a").replace("n", " n").split():
        n = int(part[1:])
        letters = "".join(_pick(rng, _LETTERS) for _ in range(n))
        bban += _digits(rng, n) if part[0] == "n" else letters
    # ISO 13616: the check digits make the rearranged number 1 mod 97.
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return iban if rng.random() < 0.5 else " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def _email(rng: np.random.Generator) -> str:
    first, last = _pick(rng, _NAMES).lower(), _pick(rng, _SURNAMES).lower()
    number = str(int(rng.integers(1, 100))) if rng.random() < 0.3 else ""
    return f"{first}{_pick(rng, ('.', '_', ''))}{last}{number}@{_pick(rng, _DOMAINS)}"


def _phone(rng: np.random.Generator) -> str:
    d = _digits(rng, 10)
    formats = (
        f"+44 20 {d[:4]} {d[4:8]}",
        f"+1 ({d[:3]}) {d[3:6]}-{d[6:]}",
        f"+49 30 {d[:8]}",
        f"+33 1 {d[:2]} {d[2:4]} {d[4:6]} {d[6:8]}",
        f"({d[:3]}) {d[3:6]}-{d[6:]}",
    )
    return _pick(rng, formats)


def _credit_card(rng: np.random.Generator) -> str:
    prefix, groups = _pick(rng, ("4", "51", "52", "53", "54", "55", "34", "37")), (4, 4, 4, 4)
    if prefix in ("34", "37"):
        groups = (4, 6, 5)
    body = prefix + _digits(rng, sum(groups) - len(prefix) - 1)
    number = body + _luhn_digit(body)
    cuts = np.cumsum((0, *groups)).tolist()
    return _pick(rng, (" ", "-", "")).join(number[a:b] for a, b in itertools.pairwise(cuts))


def _ipv4(rng: np.random.Generator) -> str:
    return ".".join(map(str, [int(rng.integers(1, 224)), *rng.integers(0, 256, 3).tolist()]))


_PII_VALUES = {
    "email": _email,
    "phone": _phone,
    "credit_card": _credit_card,
    "ipv4": _ipv4,
    "iban": _iban,
}


def _add_pii(
    sentences: list[str], rng: np.random.Generator
) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Insert one to three PII sentences; return them as (kind, value, sentence) too."""
    planted = []
    sentences = list(sentences)
    for _ in range(int(rng.integers(1, 4))):
        kind = _pick(rng, list(_PII_VALUES))
        value = _PII_VALUES[kind](rng)
        sentence = _pick(rng, _PII_SENTENCES[kind]).replace("NAME", _pick(rng, _NAMES))
        sentence = sentence.format(value)
        sentences.insert(int(rng.integers(len(sentences) + 1)), sentence)
        planted.append((kind, value, sentence))
    return sentences, planted


def _locate(text: str, planted: list[tuple[str, str, str]]) -> tuple[PiiSpan, ...]:
    """Offsets of planted values in the final text (case-insensitively, for case variants)."""
    folded, spans = text.lower(), []
    for kind, value, sentence in planted:
        at = folded.find(sentence.lower()) + sentence.lower().find(value.lower())
        spans.append(PiiSpan(kind, text[at : at + len(value)], at, at + len(value)))
    return tuple(sorted(spans, key=lambda span: span.start))


def _original(seed: int, index: int) -> Document:
    """Original ``index`` with its PII: a pure function of ``(seed, index)``."""
    rng = np.random.default_rng([seed, index, 1])
    sentences, planted = _base_sentences(seed, index), []
    if rng.random() < PII_SHARE:
        sentences, planted = _add_pii(sentences, rng)
    text = _paragraphs(sentences, rng)
    return Document(_doc_id(index), text, pii=_locate(text, planted))


def _exact_copy(original: Document, index: int, rng: np.random.Generator) -> Document:
    """The original itself, upper-cased, or with different spacing (equal once normalised)."""
    variant = _pick(rng, ("same", "same", "case", "spacing"))
    text = original.text
    if variant == "case":
        text = text.upper()
    elif variant == "spacing":
        text = "  " + text.replace(". ", ".   ").replace("\n\n", "\n \t\n") + "\n"
    planted = [(p.kind, p.value, p.value) for p in original.pii]
    return Document(_doc_id(index), text, original.id, "exact", (variant,), _locate(text, planted))


def _near(seed: int, source: int, index: int, rng: np.random.Generator) -> Document:
    sentences, edits = _near_copy(_base_sentences(seed, source), rng)
    planted: list[tuple[str, str, str]] = []
    if rng.random() < PII_SHARE:
        sentences, planted = _add_pii(sentences, rng)
    text = _paragraphs(sentences, rng)
    pii = _locate(text, planted)
    return Document(_doc_id(index), text, _doc_id(source), "near", tuple(edits), pii)


def _doc_id(index: int) -> str:
    return f"doc-{index:06d}"


def iter_documents(n: int, seed: int = 0) -> Iterator[Document]:
    """Stream ``n`` documents; memory stays flat (only the indices of originals are held)."""
    originals: list[int] = []
    for index in range(n):
        rng = np.random.default_rng([seed, index, 2])
        role = rng.random()
        if not originals or role >= EXACT_SHARE + NEAR_SHARE:
            originals.append(index)
            yield _original(seed, index)
            continue
        source = originals[int(rng.integers(len(originals)))]
        if role < EXACT_SHARE:
            yield _exact_copy(_original(seed, source), index, rng)
        else:
            yield _near(seed, source, index, rng)


def generate(n: int, seed: int = 0) -> Corpus:
    """A corpus of ``n`` documents (see :func:`iter_documents` to stream instead)."""
    return Corpus(list(iter_documents(n, seed)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corpus = generate(args.docs, args.seed)
    sizes = np.array([len(d.text.encode()) for d in corpus.documents])
    kinds = [d.duplicate_kind or "original" for d in corpus.documents]
    pii = [p.kind for d in corpus.documents for p in d.pii]
    print(f"{len(sizes)} documents, {sizes.sum() / 1e6:.1f} MB, {sizes.min()}-{sizes.max()} bytes")
    print({k: kinds.count(k) for k in sorted(set(kinds))})
    print(
        f"{sum(bool(d.pii) for d in corpus.documents)} with PII:",
        {k: pii.count(k) for k in sorted(set(pii))},
    )
    print(f"{len(corpus.groups())} duplicate groups")
    print(corpus.documents[0].text[:400])


if __name__ == "__main__":
    main()
