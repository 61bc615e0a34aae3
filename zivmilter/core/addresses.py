"""Address and domain syntax: normalization so that comparisons are case-insensitive.

Pure helpers used by config, directives, the policy core's callers and the milter. Syntax checks
use email-validator (no deliverability checks: no DNS here).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from email.utils import getaddresses

import email_validator
import idna

from zivmilter.errors import MessageError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@functools.lru_cache(maxsize=65536)
def normalize_domain(text: str) -> str:
    """A whole DNS domain in lower-case A-labels, without a trailing dot; ValueError if invalid."""
    raw = str(text).strip().rstrip(".")
    if not raw or raw.startswith("*") or "@" in raw or "/" in raw or " " in raw:
        raise ValueError(f"{text!r} is not a domain name")
    try:
        ascii_name = idna.encode(raw, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ValueError(f"{text!r} is not a domain name: {exc}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2 or len(ascii_name) > 253 or not all(_LABEL.match(lab) for lab in labels):
        raise ValueError(f"{text!r} is not a domain name")
    if labels[-1].isdigit():
        raise ValueError(f"{text!r} is an address, not a domain name")
    return ascii_name


def bare_address(text: str) -> str:
    """An address as SMTP gives it (`<a@b>`, with white space perhaps) without its angle
    brackets; not normalized: the null sender `<>` becomes ""."""
    bare = text.strip()
    if bare.startswith("<") and bare.endswith(">"):
        bare = bare[1:-1].strip()
    return bare


@functools.lru_cache(maxsize=65536)
def normalize_address(text: str) -> str:
    """The comparison key of a mailbox: `local@domain`, lower-cased, domain in A-labels.

    Raises MessageError with the reason when the syntax is invalid.
    """
    raw = bare_address(str(text))
    try:
        valid = email_validator.validate_email(
            raw,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,  # RFC 5321: "john.doe"@x is john.doe@x, and valid
            test_environment=True,
        )
    except email_validator.EmailNotValidError as exc:
        raise MessageError(f"{text!r} is not a valid address: {exc}") from None
    return f"{valid.local_part.lower()}@{valid.ascii_domain.lower()}"


def domain_of(address: str) -> str:
    """Domain part of an already normalized address."""
    return address.rpartition("@")[2]


def header_addresses(values: list[str]) -> list[str]:
    """Normalized mailboxes named in address headers (To, Cc, ...); invalid ones are skipped."""
    found: list[str] = []
    for _name, addr in getaddresses([str(v) for v in values]):
        if not addr:
            continue
        try:
            norm = normalize_address(addr)
        except MessageError:
            continue
        if norm not in found:
            found.append(norm)
    return found


def envelope_recipients(
    raw: Iterable[str],
) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """RCPT TO arguments grouped by normalized address (in order, each with the forms the MTA
    gave: removing a recipient needs them as given); and the arguments that are no valid
    address, each with the reason."""
    out: dict[str, list[str]] = {}
    unusable: list[tuple[str, str]] = []
    for r in raw:
        try:
            norm = normalize_address(bare_address(r))
        except MessageError as exc:
            unusable.append((r, str(exc)))
            continue
        out.setdefault(norm, []).append(r)
    return out, unusable
