"""Parsing of the directive headers a sending application sets (SPEC section 2).

Pure: header (name, value) pairs in, a frozen `Directives` value out. A bad line never raises:
it becomes a `DirectiveIssue` that the policy core turns into a warning and `explain` shows.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import decode_header, make_header

from zivmilter import defaults
from zivmilter.core.addresses import normalize_address
from zivmilter.core.headers import ACCESS_RIGHT, DIRECT_DELIVERY, MINIMUM_VERIFICATION
from zivmilter.core.levels import TlsVersion
from zivmilter.errors import MessageError


class AccessKind(enum.Enum):
    """How a custom access right lets the recipient in."""

    SMS = "sms"
    ACCESS_CODE = "access_code"


# Every spelling seen in vendor documents, compared case-insensitively.
_KIND_SPELLINGS = {
    "sms": AccessKind.SMS,
    "access-code": AccessKind.ACCESS_CODE,
    "access_code": AccessKind.ACCESS_CODE,
    "accesscode": AccessKind.ACCESS_CODE,
    "sharedaccesscode": AccessKind.ACCESS_CODE,
}
_VERIFICATION_OVERRIDES = frozenset({"email-verification", "verification-email"})
_DIRECT_KEYS = frozenset({"tls", "auth"})
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_FOLD = re.compile(r"\r?\n[ \t]*|\r[ \t]*")
_DIRECT_SPLIT = re.compile(r"[\s,;=]+")
# Words of `zivver-direct-delivery` that reports may show: its keys and values, and anything
# shaped like a TLS version (so that an admin sees `tls1.1` refused). No secret looks like these.
_DIRECT_WORD = re.compile(
    r"tls|auth|certificate-validation|(tls|ssl)v?[0-9](\.[0-9])?|[0-9]\.[0-9]"
)
_HIDDEN = "***"


@dataclass(frozen=True, slots=True)
class AccessRight:
    recipient: str  # normalized address
    kind: AccessKind
    value: str = field(repr=False)  # phone number or access code: a secret, never printed


@dataclass(frozen=True, slots=True)
class DirectDeliveryRequest:
    """`zivver-direct-delivery`: the minimum the recipient's MX must meet."""

    tls_version: TlsVersion = TlsVersion.TLS1_2
    certificate_validation: bool = True

    def describe(self) -> str:
        auth = " + CA-valid certificate" if self.certificate_validation else ""
        return f"TLS {self.tls_version.value.removeprefix('tls')}+{auth}"


#: What ODD domains and a header with missing/unknown values ask for (SPEC 2, 3).
DEFAULT_DIRECT_DELIVERY = DirectDeliveryRequest()


@dataclass(frozen=True, slots=True)
class DirectiveIssue:
    """A reported directive line. Build it with `_issue`, which masks the line: reports go to
    `explain` and the milter's log, and a directive line carries phone numbers and access codes
    (SPEC 10), wherever in the line a sender put them."""

    header: str
    value: str  # the line as `_reported()` shows it: words that cannot be secrets, others ***
    problem: str  # never quotes the line: fixed text or words `_reported()` would show

    def __str__(self) -> str:
        return f"{self.header}: {self.value!r}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Directives:
    access_rights: dict[str, AccessRight] = field(default_factory=dict)  # by recipient
    direct_delivery: DirectDeliveryRequest | None = None
    email_verification_allowed: bool = False
    issues: tuple[DirectiveIssue, ...] = ()  # lines not used as written
    # Lines used as written, but with an access code a stolen database gives away quickly
    # (shorter than defaults.ACCESS_CODE_MIN_LENGTH): warned about, not refused (SPEC 10).
    weak_codes: tuple[DirectiveIssue, ...] = ()


NO_DIRECTIVES = Directives()


def unfold(value: str) -> str:
    """One logical line: folding removed, runs of white space collapsed."""
    return " ".join(_FOLD.sub(" ", value).split())


def _decode_words(value: str) -> str | None:
    """`value` with its RFC 2047 encoded words decoded by the `email` package; None when they
    cannot be (unknown charset, bytes that are not of their charset, 8-bit text beside them).

    Applications that build messages with the email package's SMTP policy send a non-ASCII
    value as an encoded word (`access-code =?utf-8?q?t=C3=BClip?=`): the code the recipient
    types is the decoded one.
    """
    if "=?" not in value:
        return value
    try:
        parts = decode_header(value)
        if len(parts) == 1 and isinstance(parts[0][0], str):
            return value  # no encoded word after all
        if not value.isascii():
            return None  # the email package mis-decodes raw 8-bit text beside encoded words
        text = str(make_header(parts))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return None
    if "\ufffd" in text:
        return None  # bytes the charset (e.g. unknown-8bit) could not map
    return " ".join(text.split())


def _reported(header: str, value: str) -> str:
    """A directive line as reports show it, safe by construction: a word is shown only where it
    cannot be a secret, every other run of words is one `***`.

    zivver-access-right: the first word if it is an address, the second if it is a method
    spelling. zivver-direct-delivery: its keys and values. The verification header: its known
    values. A secret in the wrong place, a line too short to parse: still `***`.
    """
    if header == ACCESS_RIGHT:
        tokens = value.split()
        shown = [
            token
            if (i == 0 and _is_address(token)) or (i == 1 and token.lower() in _KIND_SPELLINGS)
            else None
            for i, token in enumerate(tokens)
        ]
    elif header == DIRECT_DELIVERY:
        shown = [_direct_word(t) for t in _DIRECT_SPLIT.split(value) if t]
    else:
        shown = [t if t.lower() in _VERIFICATION_OVERRIDES else None for t in value.split()]
    out: list[str] = []
    for token in shown:
        if token is not None:
            out.append(token)
        elif not out or out[-1] != _HIDDEN:
            out.append(_HIDDEN)
    return " ".join(out)


def _is_address(text: str) -> bool:
    try:
        normalize_address(text)
    except MessageError:
        return False
    return True


def _direct_word(token: str) -> str | None:
    return token if _DIRECT_WORD.fullmatch(token.lower()) else None


def _shown_word(token: str) -> str:
    """One word of zivver-direct-delivery for a problem text."""
    return repr(_direct_word(token) or _HIDDEN)


def _issue(header: str, value: str, problem: str) -> DirectiveIssue:
    return DirectiveIssue(header, _reported(header, value), problem)


def parse(
    headers: Iterable[tuple[str, str]],
    envelope_recipients: Collection[str],
    *,
    sms_enabled: bool = True,
    access_code_enabled: bool = True,
) -> Directives:
    """Read the directive headers among `headers` (any others are ignored).

    `envelope_recipients` are normalized addresses; an access right for anyone else is ignored.
    A switched-off method's lines are reported and do not count (the next valid line may win).
    """
    rights: dict[str, AccessRight] = {}
    issues: list[DirectiveIssue] = []
    weak: list[DirectiveIssue] = []
    direct: DirectDeliveryRequest | None = None
    override = False
    seen_override = False
    enabled = {AccessKind.SMS: sms_enabled, AccessKind.ACCESS_CODE: access_code_enabled}
    recipients = (
        envelope_recipients
        if isinstance(envelope_recipients, set | frozenset)
        else set(envelope_recipients)
    )

    for raw_name, raw_value in headers:
        name = raw_name.strip().lower()
        if name not in (ACCESS_RIGHT, DIRECT_DELIVERY, MINIMUM_VERIFICATION):
            continue
        value = unfold(str(raw_value))
        decoded = _decode_words(value)
        if decoded is None:
            if name == ACCESS_RIGHT:
                issues.append(_issue(name, value, "undecodable RFC 2047 encoded word; ignored"))
                continue
            # Still present (zivver-direct-delivery switches to table B): read as it is.
            issues.append(_issue(name, value, "undecodable RFC 2047 encoded word; read as it is"))
        else:
            value = decoded
        if name == ACCESS_RIGHT:
            right, problem = _access_right(value, recipients, enabled)
            if problem is None and right is not None:
                if right.recipient in rights:
                    problem = f"{right.recipient} already has an access right; the first line wins"
                else:
                    rights[right.recipient] = right
                    if _short_code(right):
                        weak.append(_issue(ACCESS_RIGHT, value, _SHORT_CODE))
                    continue
            issues.append(_issue(ACCESS_RIGHT, value, str(problem)))
        elif name == DIRECT_DELIVERY:
            if direct is not None:
                issues.append(
                    _issue(DIRECT_DELIVERY, value, "repeated header; the first one counts")
                )
                continue
            direct, problems = _direct_delivery(value)
            issues.extend(_issue(DIRECT_DELIVERY, value, p) for p in problems)
        else:
            if seen_override:
                issues.append(
                    _issue(MINIMUM_VERIFICATION, value, "repeated header; the first one counts")
                )
                continue
            seen_override = True
            override = value.lower() in _VERIFICATION_OVERRIDES
            if not override:
                issues.append(
                    _issue(
                        MINIMUM_VERIFICATION,
                        value,
                        "unknown value (expected email-verification); "
                        "email verification stays subject to the transport minimum",
                    )
                )
    return Directives(rights, direct, override, tuple(issues), tuple(weak))


def _access_right(
    value: str, recipients: Collection[str], enabled: dict[AccessKind, bool]
) -> tuple[AccessRight | None, str | None]:
    tokens = value.split(" ")
    if len(tokens) < 3 or not value:
        return None, "expected '<recipient> <method> <value>'"
    address_text, method_text = tokens[0], tokens[1]
    secret = " ".join(tokens[2:])
    try:
        address = normalize_address(address_text)
    except MessageError:
        return None, "the first word is not a valid recipient address"
    kind = _KIND_SPELLINGS.get(method_text.lower())
    if kind is None:
        return None, "unknown method (expected sms or access-code)"
    if address not in recipients:
        return None, f"{address} is not a recipient of this message"
    if kind is AccessKind.SMS and (len(tokens) != 3 or not _E164.fullmatch(secret)):
        return None, "phone number is not E.164 (a + and up to 15 digits, no spaces)"
    if not enabled[kind]:
        switch = "sms" if kind is AccessKind.SMS else "access_code"
        return None, f"the {kind.value} method is switched off (policy.methods.{switch})"
    return AccessRight(address, kind, secret), None


# SPEC 10 does not let us refuse a short access code: it is used, and reported (milter log and
# `explain`), since a few characters are guessed quickly from a stolen database.
_SHORT_CODE = (
    f"access code shorter than {defaults.ACCESS_CODE_MIN_LENGTH} characters: used,"
    " but easy to guess; give a longer one"
)


def _short_code(right: AccessRight) -> bool:
    return (
        right.kind is AccessKind.ACCESS_CODE
        and len(right.value.strip()) < defaults.ACCESS_CODE_MIN_LENGTH
    )


def _direct_delivery(value: str) -> tuple[DirectDeliveryRequest, list[str]]:
    """Options are key/value pairs; anything missing or unknown takes the default.

    A key followed by another key has no value (`auth tls tls1.3`): it takes the default and
    reading goes on at that next key, which keeps its own value.
    """
    tokens = [t for t in _DIRECT_SPLIT.split(value.lower()) if t]
    problems: list[str] = []
    version = DEFAULT_DIRECT_DELIVERY.tls_version
    i = 0
    while i < len(tokens):
        key = tokens[i]
        if key not in _DIRECT_KEYS:
            problems.append(f"unknown option {_shown_word(key)} ignored")
            i += 1
            continue
        arg = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1] not in _DIRECT_KEYS else None
        i += 1 if arg is None else 2
        if key == "tls":
            parsed = TlsVersion.parse(arg)
            if arg is None:
                problems.append("no value for tls; using tls1.2")
            elif parsed is None:
                problems.append(f"unknown tls value {_shown_word(arg)}; using tls1.2")
            else:
                version = parsed
        elif arg is None:
            problems.append("no value for auth; using certificate-validation")
        elif arg != "certificate-validation":
            problems.append(f"unknown auth value {_shown_word(arg)}; using certificate-validation")
    if not tokens:
        problems.append("no options; using tls1.2 + certificate-validation")
    return DirectDeliveryRequest(version, True), problems
