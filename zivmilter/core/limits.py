"""What zivmilter refuses before it decides anything: a message larger than
`milter.max_message_bytes`. The milter enforces it as the message arrives (mta/milter.py),
`explain` says it.

A refusal of the input, decided from the message alone: permanent (5xx), the same at every try.
It is not a fault (SPEC 10 answers a fault with tempfail, so the MTA keeps the message): a
tempfail would only keep the message in the client's queue for days, then bounce it.
"""

from __future__ import annotations


def too_big(limit: int) -> str:
    """The reply to a message over `milter.max_message_bytes` (RFC 3463 5.3.4: message too big
    for system), at MAIL FROM (its SIZE=) or at the end of data."""
    return f"552 5.3.4 message too big for zivmilter (over {limit} bytes, milter.max_message_bytes)"


def declared_size(params: tuple[str, ...] | list[str]) -> int | None:
    """The SIZE= a client declared at MAIL FROM (RFC 1870), among its ESMTP parameters; None
    when it gave none, or one that is no number (the MTA judges its syntax)."""
    for param in params:
        name, _, value = param.partition("=")
        value = value.strip()
        if name.strip().upper() == "SIZE" and value.isascii() and value.isdigit():
            return int(value)
    return None
