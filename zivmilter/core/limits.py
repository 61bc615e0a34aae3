"""What zivmilter refuses before it decides anything: a message larger than
`milter.max_message_bytes` (the milter counts it as it arrives, mta/milter.py), and one whose
MIME parts nest deeper than `defaults.MIME_NESTING_LIMIT` (the gateway measures it first,
before anything is stored or sent). `explain` says both.

Refusals of the input, decided from the message alone: permanent (5xx), the same at every try.
They are not faults (SPEC 10 answers a fault with tempfail, so the MTA keeps the message): a
tempfail would only keep the message in the client's queue for days, then bounce it.

**Nesting.** The `email` package parses and walks a message recursively: its parser a level of
Python calls per multipart or message/* part, its generator (`as_bytes`) four. A message nested
a few hundred levels deep hit Python's recursion limit in the gateway (a direct copy's large
attachments made links: `as_bytes` gives out near 250 levels; the parts the store keeps apart),
and the milter tempfailed it at every try. Postfix refuses multipart nesting deeper than its
`mime_nesting_limit` (100) with 5.6.0 where it checks headers (header_checks, as zivmilter's
install has it), but does not count message/rfc822 levels, and Sendmail has no such limit. So
the gateway refuses a message deeper than 100 levels (`deeper_than`), as Postfix does: far
below what breaks, far above what real mail nests (a forward of a forward seldom passes ten).
The depth is the tree's that the `email` package itself builds (no parsing of our own); nearly
all mail is not parsed for it at all: each level needs a Content-Type field of its own naming
multipart or message/* (or its parent's, a multipart/digest's parts being message/rfc822 by
default), so a message with no more than limit / 2 such fields cannot nest deeper.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32, default
from typing import BinaryIO


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


def too_deep(limit: int) -> str:
    """The reply to a message whose MIME parts nest deeper than `limit` (RFC 3463 5.6.0, as
    Postfix answers for its own mime_nesting_limit)."""
    return (
        f"554 5.6.0 MIME nesting deeper than {limit} levels, refused by zivmilter (its limit,"
        " as Postfix's mime_nesting_limit)"
    )


def deeper_than(source: BinaryIO, limit: int) -> bool:
    """Whether the MIME parts of the message in `source` (read from where it stands, left
    there) nest deeper than `limit`: parsed (`mime_depth`) only where more than `limit` / 2 of
    its Content-Type fields may name a multipart or message/* type, which nearly no mail has."""
    start = source.tell()
    try:
        bound = 2 * _nesting_fields(source)
    finally:
        source.seek(start)
    return bound > limit and mime_depth(source, limit) > limit


def mime_depth(source: BinaryIO, limit: int) -> int:
    """How deep the MIME parts of the message in `source` nest (read from where it stands, left
    there): the most multipart and message/* parts around one part (0: a single part), in the
    trees the `email` package builds of it under compat32 and under policy.default (the deeper:
    they can read a Content-Type differently), counted up to `limit` + 1. A message the package
    cannot even parse for it (RecursionError, thousands of levels) is deeper than any limit."""
    start = source.tell()
    deepest = 0
    try:
        for policy in (compat32, default):
            source.seek(start)
            try:
                msg = BytesParser(policy=policy).parse(source)
            except RecursionError:
                return limit + 1
            deepest = max(deepest, _tree_depth(msg, limit))
            if deepest > limit:
                break
    finally:
        source.seek(start)
    return deepest


def _tree_depth(msg: Message, limit: int) -> int:
    """The depth of a parsed tree (up to `limit` + 1), walked without recursion."""
    deepest, stack = 0, [(msg, 0)]
    while stack:  # (a part, how many parts are around it)
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return limit + 1
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((sub, depth + 1) for sub in payload if isinstance(sub, Message))
    return deepest


_BLOCK = 1024 * 1024
_NAME = b"content-type"
# A Content-Type field from its name to its end: the parser's line ends (CRLF, CR, LF), and
# the lines after that start with a space or tab (folded), in lower case.
_TYPE_FIELD = re.compile(rb"content-type[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*")


def _nesting_fields(source: BinaryIO) -> int:
    """How many Content-Type fields from here on may name a multipart or message/* type (their
    text holds "multipart" or "message", in any case): an upper bound, as a field name is never
    folded or encoded and a type never split. Read a block at a time; a name cut across two
    reads is found once (the carried tail is shorter than it), and a field the block ends in
    counts (it may go on to name one)."""
    count, tail = 0, b""
    while block := source.read(_BLOCK):
        text = tail + block.lower()
        for m in _TYPE_FIELD.finditer(text):
            field = m.group()
            if m.end() == len(text) or b"multipart" in field or b"message" in field:
                count += 1
        tail = text[-(len(_NAME) - 1) :]
    return count
