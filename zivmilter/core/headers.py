"""Names of the headers zivmilter reads, adds or removes; one place for all of them."""

from __future__ import annotations

ACCESS_RIGHT = "zivver-access-right"
DIRECT_DELIVERY = "zivver-direct-delivery"
MINIMUM_VERIFICATION = "zivver-minimum-recipient-verification"

#: Directive headers set by the sending application; always removed from every message (SPEC 2).
DIRECTIVE_HEADERS = (ACCESS_RIGHT, DIRECT_DELIVERY, MINIMUM_VERIFICATION)

#: Added by the milter to direct-delivery copies; Postfix routes on it, removes it on the way out.
ROUTE_HEADER = "X-Zivmilter-Route"

#: Never in a stored or direct copy (lower case): who else got a Bcc (Resent-Bcc: the same for a
#: message a client redirected, RFC 5322 3.6.6), and the route header.
NOT_COPIED = frozenset({"bcc", "resent-bcc", ROUTE_HEADER.lower()})

_DIRECTIVES = frozenset(DIRECTIVE_HEADERS)


def is_directive(name: str) -> bool:
    """True for a directive header name, in any case."""
    return name.strip().lower() in _DIRECTIVES
