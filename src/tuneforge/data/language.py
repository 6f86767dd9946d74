"""A small offline language detector: writing system first, then stop-word profiles.

Good enough to filter a fine-tuning set to the languages it should contain
(it needs a sentence or two of text); not a substitute for a trained
classifier on short or mixed-language snippets.
"""

from __future__ import annotations

import re
from collections import Counter

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

# Scripts whose presence alone names the language (or its usual family).
_SCRIPTS = [
    ("ja", re.compile(r"[\u3040-\u30ff]")),
    ("ko", re.compile(r"[\uac00-\ud7af]")),
    ("zh", re.compile(r"[\u4e00-\u9fff]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
]

_STOPWORDS = {
    "en": "the and of to a in is that it for was on are with as be this have not you at by from or",
    "de": "der die und das ist nicht ein eine zu den von mit sich des auf für im dem auch es ich",
    "fr": "le la les et des est un une du en que pas pour qui dans sur au avec il elle ce sont",
    "es": "el la los las y de que en un una es por con no para se del al lo como más su",
    "it": "il la di che e un una per non sono del della le gli con si è anche come alla",
    "pt": "o a os as e de que em um uma é não para com do da dos das se por mais",
    "nl": "de het een en van is dat niet op te in zijn voor met die ook als maar er",
    "sv": "och att det som en är på för med har inte av till den jag de ett om",
    "pl": "i w nie na się że jest do to z co jak ale tak po od za",
}
_PROFILES = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}


def detect_language(text: str) -> tuple[str, float]:
    """Guess the language of ``text``.

    Returns:
        (ISO 639-1 code or ``"unknown"``, confidence in [0, 1]).
    """
    letters = sum(c.isalpha() for c in text)
    if not letters:
        return "unknown", 0.0
    for lang, pattern in _SCRIPTS:
        share = len(pattern.findall(text)) / letters
        if share > 0.3:
            return lang, min(1.0, share)
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return "unknown", 0.0
    hits = Counter({lang: sum(w in vocab for w in words) for lang, vocab in _PROFILES.items()})
    (best, top), *rest = [*hits.most_common(2), ("", 0)]
    if top < 2 or top / len(words) < 0.1:
        return "unknown", 0.0
    runner_up = rest[0][1]
    return best, round((top - runner_up) / top, 3)
