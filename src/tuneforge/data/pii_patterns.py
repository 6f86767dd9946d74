"""The regex detectors behind :mod:`tuneforge.data.pii`, each with its validator.

Validators reject look-alikes: Luhn and issuer prefixes for cards, mod-97 and the
per-country length for IBANs, :mod:`ipaddress` (and a version-number context test)
for IP addresses, the never-issued ranges for SSNs, a decodable header for JWTs and
an entropy test for generic secrets. A number must be a whole digit run: a phone
number, card or SSN never matches a prefix or suffix of a longer id.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

Accept = Callable[[re.Match[str]], tuple[int, int] | None]


# Whether a text may hold a finding, from the text and its char_classes (None: unknown).
Needs = Callable[[str, bytes | None], bool]


@dataclass(frozen=True)
class Detector:
    """A regex, a validator that returns the span to redact (or None), and cheap hints.

    One of the ``hints`` must occur in the lower-cased text (lower-cased too) for the regex
    to be worth running (most texts hold none). A ``gate``
    is a cheaper regex that must match the lower-cased text. ``needs`` is false only for
    a text that cannot hold an accepted finding (it lacks the digits, separators or
    literals every one spells), so skipping such a text changes nothing but the time.
    """

    name: str
    type: str
    pattern: re.Pattern[str]
    accept: Accept
    priority: int
    hints: tuple[str, ...] = ()
    gate: re.Pattern[str] | None = None
    needs: Needs | None = None


# ASCII digits become "0" and capitals "A"; lower-case letters go (no shape needs one, and
# dropping them leaves a third of the text to search); every other byte stays as it is.
_CLASS_TABLE = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26)
_LOWER_CASE = b"abcdefghijklmnopqrstuvwxyz"
_NON_ASCII_DIGIT = re.compile(r"[^\D0-9]")


def char_classes(text: str) -> bytes | None:
    """The text as classes: ``0`` for a digit, ``A`` for a capital, ``?`` past ASCII.

    Searching these with C-level byte scans for the shapes a detector needs (runs of digits
    and separators, capitals before digits) is far cheaper than running its regex, which
    tries every digit of the text. Lower-case letters are left out: a shape spans none, so
    dropping them only joins what was apart, and a text lacking a shape still lacks it.
    Non-ASCII characters other than digits belong to no shape either, so they may become
    ``?``; a non-ASCII digit (``\\d`` matches one) would, so such a text gets None.
    """
    if text.isascii():
        return text.encode("ascii").translate(_CLASS_TABLE, _LOWER_CASE)
    if _NON_ASCII_DIGIT.search(text):
        return None
    return text.encode("ascii", "replace").translate(_CLASS_TABLE, _LOWER_CASE)


def _classes_hold(*literals: bytes) -> Needs:
    """A finding needs one of ``literals`` in the char_classes of the text."""
    if len(literals) == 1:  # the common case, without the any() call
        literal = literals[0]
        return lambda _, classes: classes is None or literal in classes
    return lambda _, classes: classes is None or any(map(classes.__contains__, literals))


def _classes_match(pattern: bytes) -> Needs:
    """A finding needs ``pattern`` to match the char_classes of the text."""
    search = re.compile(pattern).search
    return lambda _, classes: classes is None or search(classes) is not None


def _text_matches(pattern: str) -> Needs:
    """A finding needs ``pattern`` to match the text itself."""
    search = re.compile(pattern).search
    return lambda text, _: search(text) is not None


def _checked(valid: Callable[[str], bool], group: int | str = 0) -> Accept:
    def accept(match: re.Match[str]) -> tuple[int, int] | None:
        return match.span(group) if valid(match.group(group)) else None

    return accept


def _start(first: str, *not_after: str) -> str:
    """``first``, where it does not follow any of ``not_after`` (fixed-width patterns).

    A pattern that opens by consuming a character lets the regex engine skip ahead to
    candidates; one that opens with a look-behind is tried at every position, 3-4x slower.
    """
    return first + "".join(f"(?<!{before}{first})" for before in not_after)


def _always(_: str) -> bool:
    return True


_whole, _value = _checked(_always), _checked(_always, "value")


# ---- e-mail -------------------------------------------------------------------------------

# Retina images (icon@2x.png) and package pins look like addresses; no mail TLD is a file type.
_FILE_TYPES = "png jpg jpeg gif svg webp ico bmp tif tiff pdf js css json yaml yml lock txt html"
_FILE_TLDS = frozenset(_FILE_TYPES.split())
_EMAIL = re.compile(
    _start("[A-Za-z0-9]", r"[\w.%+\-]", "://") + r"(?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    r"(?![\w\-]|\.\w|:[\w/~])"  # git@github.com:org/repo is an SSH remote, not an address
)


def _valid_email(text: str) -> bool:
    local, domain = text.rsplit("@", 1)
    return ".." not in local and domain.rsplit(".", 1)[1].lower() not in _FILE_TLDS


# ---- phone numbers ------------------------------------------------------------------------

# Separators and the requirement to consume the whole digit run keep dates (2024-03-15),
# versions (10.0.19045), ISBNs and longer ids (tracking numbers) from matching a prefix.
_END_OF_NUMBER = r"(?![\w\-]|[ .\-]?\d|[.,]\d)"
_PHONE_INTL = re.compile(
    _start(r"\+", r"[\w+]")
    + r"[1-9]\d{0,2}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,6})){1,6}"
    + _END_OF_NUMBER
)
_NOT_IN_A_NUMBER = (r"[\w+\-./#$]", r"\d[ \-]")
_PHONE_NANP = re.compile(  # (555) 123-4567, 1-555-123-4567, 555.123.4567
    _start(r"[(\d]", *_NOT_IN_A_NUMBER)
    + r"(?:(?<=\()\d{3}\)[ .\-]?|(?<=1)[ .\-](?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])|(?<=\d)\d\d[ .\-])"
    r"\d{3}[ .\-]\d{4}" + _END_OF_NUMBER
)
_PHONE_TRUNK = re.compile(  # national numbers with a trunk 0: UK, EU, Australia, Japan
    _start(r"[(0]", *_NOT_IN_A_NUMBER)
    + r"(?:(?<=\()0[1-9]\d{0,3}\)|(?<=0)[1-9]\d{0,3})(?:[ \-]\d{2,8}){1,4}"
    + _END_OF_NUMBER
)


def _valid_nanp(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    digits = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
    return len(digits) == 10 and digits[0] in "23456789"


def _digit_count(low: int, high: int) -> Callable[[str], bool]:
    return lambda text: low <= sum(c.isdigit() for c in text) <= high


# ---- payment data -------------------------------------------------------------------------

_CARD = re.compile(
    _start(r"\d", r"[\w\-.+/]", r"\d[ \-]") + r"(?:[ \-]?\d){12,18}" + _END_OF_NUMBER
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _known_iin(d: str) -> bool:
    """Issuer prefixes and lengths of Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
    Maestro."""
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    return (
        (d[0] == "4" and n in (13, 16, 19))
        or ((51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16)
        or (p2 in (34, 37) and n == 15)
        or ((p4 == 6011 or 644 <= p3 <= 649 or p2 == 65) and 16 <= n <= 19)
        or (3528 <= p4 <= 3589 and 16 <= n <= 19)
        or ((300 <= p3 <= 305 or p2 in (36, 38, 39)) and 14 <= n <= 19)
        or ((p2 == 50 or 56 <= p2 <= 69) and 12 <= n <= 19)
    )


def _valid_card(text: str) -> bool:
    groups = re.split(r"[ \-]", text)
    if len(groups) > 1 and (
        len(set(re.findall(r"[ \-]", text))) > 1
        or len(groups[0]) != 4
        or not all(3 <= len(g) <= 6 for g in groups[1:])
    ):
        return False  # printed cards group 4-4-4-4, 4-6-5 or 4-6-4 with one separator
    digits = "".join(groups)
    return _known_iin(digits) and _luhn(digits)


_IBAN_TABLE = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 "
    "DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 "
    "IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 "
    "MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 "
    "SC31 SD18 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
)
_IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in _IBAN_TABLE.split()}
_IBAN = re.compile(
    _start("[A-Z]", r"[\w\-]")
    + r"[A-Z]\d{2}(?:[A-Z0-9]{11,30}|(?:[ \-][A-Z0-9]{4}){2,7}(?:[ \-][A-Z0-9]{1,4})?)"
    r"(?![\w\-])"
)


def _valid_iban(text: str) -> bool:
    iban = re.sub(r"[ \-]", "", text)
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _accept_iban(match: re.Match[str]) -> tuple[int, int] | None:
    """Accept the longest valid prefix made of whole groups (the last group may be a word)."""
    text = match.group()
    while len(text) >= 15:
        if _valid_iban(text):
            return match.start(), match.start() + len(text)
        cut = max(text.rfind(" "), text.rfind("-"))
        if cut < 4:
            return None
        text = text[:cut]
    return None


# ---- network addresses --------------------------------------------------------------------

_IPV4 = re.compile(_start(r"\d", r"[\w.\-]") + r"\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w\-]|\.\d)")
# A dotted quad after a version word, a comparison (pkg==1.2.3.4), a product token
# (Chrome/120.0.0.0) or another version and an arrow is a version number, not an address.
_VERSION_BEFORE = re.compile(
    r"(?:\b(?:v|ver|version|versions|release|rel|build|rev|revision|update[sd]?|upgrade[sd]?"
    r"|downgrade[sd]?|patch|bump(?:ed)?|firmware|fw|sdk|tag|pin(?:ned)?)\.?\s*[:=#]?"
    r"(?:\s+(?:from|to))?\s*[\"'(]?|[=<>~^!]=?\s*|[A-Za-z]/|\d+(?:\.\d+)+\s*(?:->|→|=>|to)\s*)$",
    re.IGNORECASE,
)
_VERSION_AFTER = re.compile(r"\s*(?:release|build|version|patch|rc\d*|beta|alpha)\b", re.I)


def _accept_ipv4(match: re.Match[str]) -> tuple[int, int] | None:
    try:
        ipaddress.IPv4Address(match.group())
    except ValueError:
        return None
    before = match.string[max(0, match.start() - 40) : match.start()]
    if _VERSION_BEFORE.search(before) or _VERSION_AFTER.match(match.string, match.end()):
        return None
    return match.span()


_IPV6 = re.compile(
    _start("[0-9A-Fa-f:]", r"[\w:.]") + r"[0-9A-Fa-f]{0,3}(?::[0-9A-Fa-f]{0,4}){1,7}"
    r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?:%[A-Za-z0-9]+)?(?![\w:]|\.\d)"
)


def _accept_ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group()
    start = match.start()
    # arr[1::2] is a slice; "a :: Int" is a type signature: neither is an address.
    if (
        text.count(":") < 2
        or not re.search(r"[0-9A-Fa-f]", text)
        or re.search(r"\w\[$", match.string[max(0, start - 2) : start])
    ):
        return None
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return match.span()


# ---- US social security numbers -----------------------------------------------------------

_SSN = re.compile(
    _start(r"\d", r"[\w\-.]", r"\d[ \-]") + r"\d\d([ \-])\d\d\1\d{4}" + _END_OF_NUMBER
)
# Without separators nine digits are anything; only a label makes them an SSN.
_SSN_LABELLED = re.compile(
    r"(?i:\bSSN|\bSS#|social security(?: number| no\.?| #)?)[\"']?\s*[:#=]?\s*[\"']?"
    r"(?P<value>\d{9})(?![\w\-])"
)


def _valid_ssn(text: str) -> bool:
    """Never issued: area 000, 666 or 900-999, group 00, serial 0000."""
    digits = re.sub(r"\D", "", text)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# ---- secrets ------------------------------------------------------------------------------

_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_AWS_SECRET = re.compile(
    r"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)[\"']?\s*(?:=>|:|=)\s*"
    r"[\"']?(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
_BEARER = re.compile(r"\b(?i:bearer)\s+(?P<value>[A-Za-z0-9\-._~+/]{16,}=*)(?![\w\-.~+/=])")
_JWT = re.compile(
    _start("eyJ", r"[\w\-]") + r"[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*(?![\w\-])"
)
_KEY_LABEL = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
_PRIVATE_KEY = re.compile(
    _KEY_LABEL + r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
    # A block pasted without its END line still leaks its body: base64 and header lines.
    r"|(?:\r?\n(?:[A-Za-z0-9+/=]{8,}|[A-Za-z\-]+: [^\r\n]*))*)"
)
_SERVICE_TOKEN = re.compile(
    r"(?<![\w\-])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|sk-(?:proj-)?[A-Za-z0-9_\-]{20,}"
    r"|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_\-]{35}|hf_[A-Za-z0-9]{30,})"
    r"(?![\w\-])"
)
_ASSIGNED_SECRET = re.compile(
    r"(?<![A-Za-z0-9])(?i:api[_\-]?key|apikey|api[_\-]?secret"
    r"|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|secret[_\-]?key|client[_\-]?secret"
    r"|private[_\-]?token|token|secret|password|passwd)[\"']?\s*(?:=>|:=|:|=)\s*[\"']?"
    r"(?P<value>[A-Za-z0-9_\-./+=~]{16,})(?![\w\-./+=~])"
)
_SERVICE_GATE = re.compile(r"gh[pousr]_|github_pat_|xox|sk-|k_live_|k_test_|aiza|hf_")
_AWS_SECRET_HINTS = ("secret_access", "secretaccess", "secret_key", "secretkey")
# Case-sensitive search of the lower-cased text is ~3x faster than the (?i:...) pattern.
_KEY_GATE = re.compile(r"(?:key|token|secret|passw(?:or)?d)[\"']?\s*[:=]")
_SSN_HINTS = ("ssn", "ss#", "social security")
_DOTTED_NAME = re.compile(r"[A-Za-z_]+\d*(?:\.[A-Za-z_]+\d*)+")  # settings.SECRET_KEY


def _valid_jwt(text: str) -> bool:
    header = text.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _high_entropy(text: str) -> bool:
    """A random credential mixes letters and digits; names, paths and placeholders do not."""
    return (
        any(c.isdigit() for c in text)
        and any(c.isalpha() for c in text)
        and _entropy(text) >= 3.0
        and not _DOTTED_NAME.fullmatch(text)
    )


_URL_CREDENTIALS = re.compile(
    _start("[A-Za-z]", r"[\w+.\-]") + r"[A-Za-z0-9+.\-]{1,20}://"
    r"(?P<value>[^\s:@/?#\[\]]*:[^\s@/?#\[\]]+)@[A-Za-z0-9\[]"
)

# What every accepted finding holds; see Detector.needs. Shapes are spelled as char_classes
# spells a text.
_IBAN_START = _classes_hold(b"AA00")
# _valid_card accepts 13-19 digits in a row, or groups opening with four digits.
_CARD_DIGITS = _classes_match(rb"0000(?:[ \-]?0){9}")
_SSN_DIGITS = _classes_match(rb"000[ \-]00[ \-]0000")
_NINE_DIGITS = _classes_hold(b"000000000")
# An accepted address holds two colons with at most four hex digits between them.
_TWO_COLONS = _classes_match(rb":[0A]{0,4}:")
_DOTTED_QUAD = _classes_match(rb"0\.0{1,3}\.0{1,3}\.0")
_PLUS_DIGIT = _classes_hold(b"+0")
_NANP_DIGITS = _classes_match(rb"000[ .\-]0000")
# The trunk prefix is a literal 0 (classes would not tell it from other digits).
_TRUNK_ZERO = _text_matches(r"0(?<![\w+\-./#$]0)[1-9]\d{0,3}\)?[ \-]\d\d")
_CAPS = _classes_hold(b"AAAA")  # AKIA, ASIA
_ASSIGN = _classes_hold(b":", b"=")
_COLON = _classes_hold(b":")
_DASHES = _classes_hold(b"-----")
_AWS_KEY_HINTS = ("AKIA", "ASIA")
# Every service token holds one of these; "_" covers gh*_, github_pat_, [rs]k_live_, hf_.
_SERVICE_HINTS = ("_", "xox", "sk-", "AIza")
# _KEY_GATE needs one of these words.
_KEY_HINTS = ("key", "token", "secret", "passw")

DETECTORS: tuple[Detector, ...] = (
    Detector("private_key", "secret", _PRIVATE_KEY, _whole, 0, ("-----begin",), needs=_DASHES),
    Detector("jwt", "secret", _JWT, _checked(_valid_jwt), 1, ("eyj",)),
    Detector("aws_access_key", "secret", _AWS_KEY_ID, _whole, 1, _AWS_KEY_HINTS, needs=_CAPS),
    Detector("aws_secret_key", "secret", _AWS_SECRET, _value, 1, _AWS_SECRET_HINTS, needs=_ASSIGN),
    Detector("service_token", "secret", _SERVICE_TOKEN, _whole, 1, _SERVICE_HINTS, _SERVICE_GATE),
    Detector(
        "url_credentials", "url_credentials", _URL_CREDENTIALS, _value, 1, ("://",), needs=_COLON
    ),
    Detector("bearer_token", "secret", _BEARER, _checked(_high_entropy, "value"), 2, ("bearer",)),
    Detector(
        "api_key",
        "secret",
        _ASSIGNED_SECRET,
        _checked(_high_entropy, "value"),
        2,
        _KEY_HINTS,
        _KEY_GATE,
        needs=_ASSIGN,
    ),
    Detector("iban", "iban", _IBAN, _accept_iban, 3, needs=_IBAN_START),
    Detector("credit_card", "credit_card", _CARD, _checked(_valid_card), 3, needs=_CARD_DIGITS),
    Detector("ssn", "ssn", _SSN, _checked(_valid_ssn), 3, needs=_SSN_DIGITS),
    Detector(
        "ssn",
        "ssn",
        _SSN_LABELLED,
        _checked(_valid_ssn, "value"),
        3,
        _SSN_HINTS,
        needs=_NINE_DIGITS,
    ),
    Detector("email", "email", _EMAIL, _checked(_valid_email), 3, ("@",)),
    Detector("ipv6", "ip_address", _IPV6, _accept_ipv6, 3, (":",), needs=_TWO_COLONS),
    Detector("ipv4", "ip_address", _IPV4, _accept_ipv4, 3, (".",), needs=_DOTTED_QUAD),
    Detector(
        "phone", "phone", _PHONE_INTL, _checked(_digit_count(8, 15)), 4, ("+",), needs=_PLUS_DIGIT
    ),
    Detector("phone", "phone", _PHONE_NANP, _checked(_valid_nanp), 4, needs=_NANP_DIGITS),
    Detector("phone", "phone", _PHONE_TRUNK, _checked(_digit_count(10, 11)), 4, needs=_TRUNK_ZERO),
)
