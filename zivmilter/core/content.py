"""Content rules (SPEC 6, issue 17): a BSN, an IBAN, a payment card number or a site's own pattern
in the subject, the text of a message or an attachment's name. Pure: text in, masked matches out.

selection.py asks `scan` for the matches of the configured rules (`selection.content`); the text
of the message comes from bodytext.py, as values. A match is only ever shown masked (`mask`):
explain, `zivmilter scan` and the milter's log never print the number itself.

Every expression, ours and the site's, runs on RE2 (google-re2): matching time is linear in the
text whatever the pattern, so a site pattern cannot backtrack catastrophically, and no timeout is
needed. RE2 refuses backreferences and look-around; such a pattern is a config error at load.
The text is scanned as UTF-8 bytes, so that match positions cost nothing to convert. Each
detector is one RE2 pass that finds candidates; the checksums (eleven-test, mod 97, Luhn) and the
issuer prefixes decide in Python, on the few candidates there are.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import re2

from zivmilter import defaults


class Rules(Protocol):
    """The rules `scan` applies: config.ContentConfig (config.py imports compile_pattern from
    here, so this module names what it reads instead of importing config)."""

    @property
    def bsn(self) -> bool: ...
    @property
    def bsn_require_context(self) -> bool: ...
    @property
    def bsn_context_words(self) -> tuple[str, ...]: ...
    @property
    def iban(self) -> bool: ...
    @property
    def payment_card(self) -> bool: ...
    @property
    def compiled_patterns(self) -> tuple[tuple[str, Any], ...]: ...


#: where a text comes from, as explain and the log show it
SUBJECT = "subject"
TEXT_PLAIN = "text/plain"
TEXT_HTML = "text/html"
ATTACHMENT_NAME = "attachment name"


def attachment_where(filename: str | None) -> str:
    """Where a match in an attachment's text is, as explain and the log show it."""
    return f"attachment {filename}" if filename else "attachment"


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a message's text to scan, and where it is."""

    where: str
    text: str


@dataclass(frozen=True, slots=True)
class ContentMatch:
    rule: str  # "bsn", "iban", "payment_card" or the name of a site pattern
    where: str
    masked: str


def _options(latin1: bool = False) -> Any:
    opts = re2.Options()
    # Our own patterns are ASCII (\d, \b and [A-Z] are ASCII in RE2 whatever the encoding), so
    # they find the same in UTF-8 text read as Latin-1, with a smaller automaton: no states for
    # the UTF-8 sequences between the numbers, less of the cache to warm in each message.
    opts.encoding = re2.Options.Encoding.LATIN1 if latin1 else re2.Options.Encoding.UTF8
    opts.log_errors = False  # RE2 would print every refused pattern on stderr; we raise
    opts.max_mem = defaults.CONTENT_PATTERN_MAX_MEM
    return opts


def compile_pattern(source: str) -> Any:
    """A site pattern compiled for RE2; ValueError says what is wrong with it."""
    if not source:
        raise ValueError("an empty pattern would match every message")
    try:
        pattern = re2.compile(source.encode("utf-8", "surrogatepass"), _options())
    except re2.error as exc:
        problem = exc.args[0] if exc.args else exc
        if isinstance(problem, bytes):
            problem = problem.decode("utf-8", "replace")
        raise ValueError(f"not a valid RE2 pattern: {problem}") from None
    if pattern.search(b"") is not None:
        raise ValueError("the pattern matches empty text, so it would match every message")
    return pattern


# ---------------------------------------------------------------------------------------------
# masking


def mask(found: str) -> str:
    """The match with every letter and digit but the last three starred; separators stay."""
    alnum = sum(1 for c in found if c.isalnum())
    keep = min(3, alnum // 3)
    out: list[str] = []
    seen = 0
    for c in found:
        if c.isalnum():
            seen += 1
            out.append(c if seen > alnum - keep else "*")
        else:
            out.append(c)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# BSN: nine digits passing the eleven-test, as Dutch letters write them: 123456782, 1234.56.782,
# 123.456.782, 123 456 782, 123.45.67.82 (dots or spaces).

_BSN_SOURCE = (
    rb"\b(?:\d{9}|\d{4}[. ]\d{2}[. ]\d{3}|\d{3}[. ]\d{3}[. ]\d{3}"
    rb"|\d{3}[. ]\d{2}[. ]\d{2}[. ]\d{2})\b"
)
_BSN = re2.compile(_BSN_SOURCE, _options(latin1=True))


def bsn_valid(digits: str) -> bool:
    """The eleven-test (elfproef) of a citizen service number: 9*d1 + 8*d2 + ... + 2*d8 - d9
    is a multiple of 11 (and not all zeros)."""
    return len(digits) == 9 and digits.isascii() and _eleven(digits.encode("ascii"))


def _eleven(d: bytes) -> bool:
    """The eleven-test on nine ASCII bytes that must be digits: on the candidate as RE2 found it,
    before anything is decoded (most nine-digit candidates fail it)."""
    if not d.isdigit() or d == b"000000000":
        return False
    total = 9 * d[0] + 8 * d[1] + 7 * d[2] + 6 * d[3] + 5 * d[4] + 4 * d[5] + 3 * d[6] + 2 * d[7]
    return (total - d[8] - _ELEVEN_ZERO) % 11 == 0


_ELEVEN_ZERO = 48 * 43  # the weighted sum of nine b"0" bytes: 48 times the weights' sum 44, less 1


# ---------------------------------------------------------------------------------------------
# IBAN: ISO 13616, the country's length, mod 97 == 1.

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# Greedy: it may run on into the next words; the country's length decides where it ends.
_IBAN_SOURCE = rb"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}"


def iban_valid(iban: str) -> bool:
    """An IBAN without spaces: a known country, its length, and the mod-97 check."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_at(candidate: str) -> str | None:
    """The IBAN a candidate starts with, as written (with its spaces), if it is one."""
    length = IBAN_LENGTHS.get(candidate[:2])
    if length is None:
        return None
    count = 0
    for i, c in enumerate(candidate):
        if c != " ":
            count += 1
        if count == length:
            end = i + 1
            if end < len(candidate) and candidate[end] != " ":
                return None  # runs on without a break: a longer code, not this IBAN
            written = candidate[:end]
            return written if iban_valid(written.replace(" ", "")) else None
    return None


# ---------------------------------------------------------------------------------------------
# payment cards: 13-19 digits, Luhn, a known issuer's prefix and length.

# (first prefix, last prefix, lengths), from the issuers' published ranges
_ISSUERS: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),  # Visa
    (51, 55, frozenset({16})),  # Mastercard
    (2221, 2720, frozenset({16})),  # Mastercard 2-series
    (34, 34, frozenset({15})),  # American Express
    (37, 37, frozenset({15})),
    (6011, 6011, frozenset(range(16, 20))),  # Discover
    (644, 649, frozenset(range(16, 20))),
    (65, 65, frozenset(range(16, 20))),
    (300, 305, frozenset(range(14, 20))),  # Diners Club
    (36, 36, frozenset(range(14, 20))),
    (38, 39, frozenset(range(16, 20))),
    (3528, 3589, frozenset(range(16, 20))),  # JCB
    (62, 62, frozenset(range(16, 20))),  # UnionPay
    (2200, 2204, frozenset(range(16, 20))),  # Mir
    (5018, 5018, frozenset(range(13, 20))),  # Maestro
    (5020, 5020, frozenset(range(13, 20))),
    (5038, 5038, frozenset(range(13, 20))),
    (5893, 5893, frozenset(range(13, 20))),
    (6304, 6304, frozenset(range(13, 20))),
    (6759, 6763, frozenset(range(13, 20))),
)

_CARD_SOURCE = rb"\b\d(?:[ -]?\d){12,18}\b"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_valid(digits: str) -> bool:
    """13 to 19 digits, of a known issuer's prefix and length, passing Luhn."""
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    for lo, hi, lengths in _ISSUERS:
        width = len(str(lo))
        if lo <= int(digits[:width]) <= hi and len(digits) in lengths:
            return luhn_valid(digits)
    return False


def _card_in(candidate: str) -> str | None:
    """A card number written in a run of digit groups: the whole run, or else the longest run of
    whole groups within it (a card number with an amount or a date written beside it)."""
    cuts = [0] + [i + 1 for i, c in enumerate(candidate) if c in " -"] + [len(candidate) + 1]
    spans = sorted(
        ((a, b) for i, a in enumerate(cuts) for b in cuts[i + 1 :]),
        key=lambda ab: ab[0] - ab[1],
    )
    for a, b in spans:
        written = candidate[a : b - 1]
        digits = written.replace(" ", "").replace("-", "")
        if card_valid(digits):
            return written
    return None


# ---------------------------------------------------------------------------------------------
# scanning


_JOINERS = (b".", b"-", b",", b"/")


def _before_ok(data: bytes, start: int) -> bool:
    """Not the tail of a longer number: "12.123456782", "0031-123456782"."""
    return not (data[start - 1 : start] in _JOINERS and data[start - 2 : start - 1].isdigit())


def _after_ok(data: bytes, end: int) -> bool:
    """Not the head of a longer number: "123456782,50" (an amount), "123456782.1"."""
    return not (data[end : end + 1] in _JOINERS and data[end + 1 : end + 2].isdigit())


def _near(data: bytes, start: int, end: int, words: Sequence[bytes]) -> bool:
    reach = defaults.CONTENT_CONTEXT_CHARS
    window = data[max(0, start - reach) : end + reach].lower()
    return any(w in window for w in words)


def _bsn_at(data: bytes, start: int, end: int, context: Sequence[bytes] | None) -> str | None:
    """The BSN candidate data[start:end], if it is one where it stands."""
    raw = data[start:end]
    if not _eleven(raw if end - start == 9 else raw.replace(b".", b"").replace(b" ", b"")):
        return None  # most candidates: the eleven-test first, it is the cheapest check
    written = raw.decode("ascii")
    if not (_before_ok(data, start) and _after_ok(data, end)):
        return None
    if " " in written and (
        (data[end : end + 1] == b" " and data[end + 1 : end + 2].isdigit())
        or (data[start - 1 : start] == b" " and data[start - 2 : start - 1].isdigit())
    ):
        return None  # one more group of a longer number written in groups
    if context is not None and not _near(data, start, end, context):
        return None
    return written


# ---------------------------------------------------------------------------------------------
# the pre-check: most texts hold no candidate that could match, and then RE2 need not read them


def _byte_classes(digit: bytes, capital: bytes, word: bytes, other: bytes) -> bytes:
    r"""A bytes.translate table: ASCII digits, capitals, other word characters (a-z, _), the
    rest. RE2's \d and \b are ASCII: a byte above 127 is not a word character for them."""
    table = bytearray(other * 256)
    table[ord("0") : ord("9") + 1] = digit * 10
    table[ord("A") : ord("Z") + 1] = capital * 26
    table[ord("a") : ord("z") + 1] = word * 26
    table[ord("_")] = word[0]
    return bytes(table)


# Card and IBAN: digits and capitals as "0", anything else "x", spaces and dashes deleted. A card
# number (13 digits or more, a space or dash between groups) and an IBAN (two capitals, two
# digits and at least 11 more of both, a space between groups) are then runs of 13 "0" or more.
_LONG_RUNS = _byte_classes(b"0", b"0", b"x", b"x")
_LONG_RUN = b"0" * 13
# BSN: each byte in its place as "0" (digit), "w" (another word character) or "." (not a word
# character: where \b can be, and the BSN's dots and spaces among them)
_BSN_CLASSES = _byte_classes(b"0", b"w", b"w", b".")
_NINE = b"0" * 9
_DOT = ord(".")
# The forms in groups, 4-2-3, 3-3-3 and 3-2-2-2, found by their tails (two finds, not three):
# (tail with the non-word character after it, where the form starts before the tail, the forms
# that end so, each with its digits' places). A date (12-03-2024) has neither tail.
_BSN_TAILS: tuple[tuple[bytes, int, tuple[tuple[bytes, tuple[int, ...]], ...]], ...] = tuple(
    (tail, back, tuple((f, tuple(i for i, c in enumerate(f) if c == ord("0"))) for f in forms))
    for tail, back, forms in (
        (b"00.000.", 5, (b"0000.00.000", b"000.000.000")),
        (b".00.00.00.", 3, (b"000.00.00.00",)),
    )
)


# The pre-check saves RE2's call, a fixed cost that is large next to a message's few KB of text
# in the milter; in a long text (attachments' text, 1 MB scanned in bench/content.py) something
# is nearly always found, so the pre-check would only add its passes to RE2's.
_PRECHECK_MAX_BYTES = 64 * 1024


def _may_match(data: bytes, rules: tuple[str, ...]) -> bool:
    """False when no built-in rule of `rules` can match in `data`, so RE2 need not read it.

    Exact, never a guess: it answers True for every text in which RE2 finds a candidate that
    the checks after it (`_builtin`) could accept, and False only when there is none: no run
    that could be a card number or an IBAN, no BSN candidate passing the eleven-test. A few
    C-speed passes (bytes.translate, bytes.find) cost less than RE2's call in the milter, where
    every step starts with cold caches (issue 17); most nine-digit references fail the eleven-
    test here, without RE2.
    """
    if ("payment_card" in rules or "iban" in rules) and _LONG_RUN in data.translate(
        _LONG_RUNS, b" -"
    ):
        return True
    if "bsn" not in rules:
        return False
    c = data.translate(_BSN_CLASSES) + b"."  # (the text's end is where \b can be too)
    at = c.find(_NINE)
    while at >= 0:  # nine digits alone, between non-word characters (a longer run holds none)
        end = at + 9
        if (
            (at == 0 or c[at - 1] == _DOT)
            and c[end] == _DOT
            and not (
                9 * data[at] + 8 * data[at + 1] + 7 * data[at + 2] + 6 * data[at + 3]
                + 5 * data[at + 4] + 4 * data[at + 5] + 3 * data[at + 6] + 2 * data[at + 7]
                - data[at + 8] - _ELEVEN_ZERO
            ) % 11
        ):  # fmt: skip
            return True  # (the eleven-test inline: most nine-digit references fail it)
        at = c.find(_NINE, end)
    for tail, back, forms in _BSN_TAILS:
        at = c.find(tail)
        while at >= 0:
            start = at - back
            if start >= 0 and (start == 0 or c[start - 1] == _DOT):
                for form, places in forms:
                    if c.startswith(form, start) and _eleven_in(data, start, places):
                        return True
            at = c.find(tail, at + 1)
    return False


def _eleven_in(data: bytes, at: int, places: tuple[int, ...]) -> bool:
    """The eleven-test (without its all-zeros exception) on the nine digits at `at` + `places`."""
    d = [data[at + i] for i in places]
    total = 9 * d[0] + 8 * d[1] + 7 * d[2] + 6 * d[3] + 5 * d[4] + 4 * d[5] + 3 * d[6] + 2 * d[7]
    return (total - d[8] - _ELEVEN_ZERO) % 11 == 0


_SOURCES = {"payment_card": _CARD_SOURCE, "bsn": _BSN_SOURCE, "iban": _IBAN_SOURCE}
_COMBINED: dict[tuple[str, ...], Any] = {}


def _candidates(rules: tuple[str, ...]) -> Any:
    """One RE2 pass finds the candidates of every built-in rule that is on: the card first (a
    run of 13 digits or more is not read as a BSN and the rest), then the BSN, then the IBAN."""
    found = _COMBINED.get(rules)
    if found is None:
        found = re2.compile(b"|".join(_SOURCES[r] for r in rules), _options(latin1=True))
        _COMBINED[rules] = found
    return found


# google-re2's finditer makes a Python Match object per match; its compiled RE2 (`_regexp`, not
# public) answers the span itself. A nine-digit reference then costs about 1 us less, 2 in the
# milter with its cold caches (issue 17: the rules' budget is about 90 us per 5 KB message).
# Another google-re2 without it gets the public finditer: the same spans, only slower.
_DIRECT = hasattr(re2, "_Anchor") and hasattr(_BSN, "_regexp")


def _spans(pattern: Any, data: bytes, pos: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each match of `pattern` (never empty) in `data` from `pos`, in order."""
    if not _DIRECT:
        yield from (m.span() for m in pattern.finditer(data, pos))
        return
    match, unanchored, n = pattern._regexp.Match, re2._Anchor.UNANCHORED, len(data)
    while True:
        start, end = match(unanchored, data, pos, n)[0]
        if start < 0:
            return
        yield start, end
        pos = end


def _builtin(data: bytes, cfg: Rules) -> list[tuple[int, str, str]]:
    """(position, rule, match as written) of the built-in rules that are on."""
    rules = tuple(r for r in _SOURCES if getattr(cfg, r))
    if not rules or (len(data) <= _PRECHECK_MAX_BYTES and not _may_match(data, rules)):
        return []
    return _scan_builtin(data, cfg, rules)


def _scan_builtin(data: bytes, cfg: Rules, rules: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """`_builtin` without the pre-check: RE2 finds the candidates."""
    context = (
        [w.lower().encode() for w in cfg.bsn_context_words] if cfg.bsn_require_context else None
    )
    hits: list[tuple[int, str, str]] = []
    distinct: set[str] = set()  # a number written many times counts once toward the limit
    pattern = _candidates(rules)
    pos: int | None = 0
    while pos is not None and len(distinct) <= defaults.CONTENT_MAX_MATCHES:
        restart, pos = pos, None
        for start, end in _spans(pattern, data, restart):
            i = start
            if end - i == 9 and (
                9 * data[i] + 8 * data[i + 1] + 7 * data[i + 2] + 6 * data[i + 3]
                + 5 * data[i + 4] + 4 * data[i + 5] + 3 * data[i + 6] + 2 * data[i + 7]
                - data[i + 8] - _ELEVEN_ZERO
            ) % 11:  # fmt: skip
                # Nine digits failing the eleven-test (what most candidates are: references,
                # order numbers), inline: no slice, no call (issue 17's budget per message).
                continue
            found: list[tuple[str, str]] = []
            if end - start <= 12:  # a BSN's length as written (a card has 13 digits or more)
                bsn = _bsn_at(data, start, end, context)
                if bsn is not None:
                    found.append(("bsn", bsn))
            elif data[start] > 57:  # a letter: an IBAN, perhaps run on into the next words
                written = _iban_at(data[start:end].decode("ascii"))
                if written is not None:
                    found.append(("iban", written))
                if start + len(written or "....") < end:
                    pos = start + len(written or "....")  # look again after it
            else:
                found = _card_or_bsn(data, start, end, cfg.bsn, context)
            for rule, written in found:
                hits.append((start, rule, written))
                distinct.add(written)
            if pos is not None or len(distinct) > defaults.CONTENT_MAX_MATCHES:
                break
    return hits


def _card_or_bsn(
    data: bytes, start: int, end: int, bsn: bool, context: Sequence[bytes] | None
) -> list[tuple[str, str]]:
    card = None
    if _before_ok(data, start) and _after_ok(data, end):
        card = _card_in(data[start:end].decode("ascii"))
    if card is not None:
        return [("payment_card", card)]
    if not bsn:
        return []
    # not a card: a BSN may still be written beside other numbers
    found = []
    for b in _BSN.finditer(data[start:end]):
        written = _bsn_at(data, start + b.start(), start + b.end(), context)
        if written is not None:
            found.append(("bsn", written))
    return found


def scan(cfg: Rules, parts: Iterable[Part]) -> tuple[ContentMatch, ...]:
    """The matches of the configured content rules, masked, each (rule, where, masked) once, at
    most defaults.CONTENT_MAX_MATCHES of them; only the first CONTENT_MAX_TEXT_BYTES of text are
    read.

    The parts are scanned as one text, a blank line between them (no built-in rule reads across
    a line end): each RE2 call has a fixed cost that is large next to scanning a few KB.
    """
    budget = defaults.CONTENT_MAX_TEXT_BYTES
    chunks: list[bytes] = []
    starts: list[int] = []
    wheres: list[str] = []
    at = 0
    for part in parts:
        if budget <= 0:
            break
        text = part.text
        if not text.isascii():  # (a flag of the string: no pass over it)
            # a no-break space (&nbsp; in HTML) separates groups as a space does
            text = text.replace("\u00a0", " ").replace("\u202f", " ")
        data = text.encode("utf-8", "surrogatepass")[:budget]
        budget -= len(data)
        chunks.append(data)
        starts.append(at)
        wheres.append(part.where)
        at += len(data) + 2
    if not chunks:
        return ()
    text_all = b"\n\n".join(chunks)
    hits = _builtin(text_all, cfg)
    for name, pattern in cfg.compiled_patterns:
        for n, m in enumerate(pattern.finditer(text_all)):
            hits.append((m.start(), name, m.group().decode("utf-8", "replace")))
            if n >= defaults.CONTENT_MAX_MATCHES:
                break
    found: dict[ContentMatch, None] = {}
    for start, rule, written in sorted(hits, key=lambda h: h[0]):
        where = wheres[bisect.bisect_right(starts, start) - 1]
        found.setdefault(ContentMatch(rule, where, mask(written)), None)
    return tuple(found)[: defaults.CONTENT_MAX_MATCHES]
