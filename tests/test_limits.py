"""core/limits.py: the MIME nesting depth of the tree the `email` package builds, and the cheap
bound (Content-Type fields named) that spares ordinary mail the parse; and every walk of the
tree the gateway does holds at the limit (defaults.MIME_NESTING_LIMIT), where the messages that
reach it stop.

Checked against the `email` package's trees counted here without recursion, under compat32 and
policy.default, for generated messages (boundaries that are prefixes of others, missing
delimiters, digests, delivery-status blocks, bare CR and LF, folded and RFC 2231 and
encoded-word boundaries, "--" lines in text): the depth, and that the bound never rules out a
message that is deeper.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Callable
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any

import pytest

from tests.harness.messages import nested_message
from zivmilter import defaults
from zivmilter.core import limits
from zivmilter.core.bodytext import (
    attachments_of_message,
    parts_of_body,
    parts_of_message,
    pdf_text_bytes,
    pdf_text_bytes_of_message,
)
from zivmilter.mail import attachments, parts

LIMIT = defaults.MIME_NESTING_LIMIT
HEAD = b"From: alice@hospital.example\r\nTo: bob@partner.example\r\nSubject: nested\r\n"
TEXT = b"Content-Type: text/plain\r\n\r\nthe innermost text\r\n"


def tree_depth(msg: Message) -> int:
    """The depth of the tree the `email` package built (counted without recursion)."""
    deepest, stack = 0, [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((sub, depth + 1) for sub in payload)
    return deepest


def email_depth(data: bytes) -> int:
    """The deeper of the trees compat32 and policy.default build of `data`."""
    return max(
        tree_depth(BytesParser(policy=p).parsebytes(data))
        for p in (policy.compat32, policy.default)
    )


def depth(data: bytes, limit: int = 1000) -> int:
    return limits.mime_depth(io.BytesIO(data), limit)


MIXED = b"Content-Type: multipart/mixed; boundary="


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (HEAD + b"\r\nplain text\r\n", 0),
        (HEAD + MIXED + b"b\r\n\r\n--b\r\n" + TEXT + b"--b--\r\n", 1),
        # no boundary: all its body is one payload
        (HEAD + b"Content-Type: multipart/mixed\r\n\r\n--b\r\n" + TEXT + b"--b--\r\n", 0),
        (HEAD + b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ntext\r\n", 1),
        (nested_message(1, HEAD, TEXT), 1),
        (nested_message(2, HEAD, TEXT), 2),
        (nested_message(7, HEAD, TEXT), 7),
        # a digest's parts are messages by default: two levels for one delimiter
        (
            HEAD + b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
            b"--d\r\n\r\nSubject: x\r\n\r\nx\r\n--d--\r\n",
            2,
        ),
        # delivery-status: each block of fields a part
        (HEAD + b"Content-Type: message/delivery-status\r\n\r\nA: b\r\n\r\nC: d\r\n", 1),
        # a boundary that only policy.default reads (an encoded word): its tree counts
        (HEAD + MIXED + b'"=?utf-8?q?e?="\r\n\r\n--e\r\n' + TEXT + b"--e--\r\n", 1),
        # an inner part ended by the outer boundary, its own never closed
        (
            HEAD + MIXED + b"o\r\n\r\n--o\r\n" + MIXED + b"i\r\n\r\n--i\r\n" + TEXT
            + b"--o\r\n" + TEXT + b"--o--\r\n",
            2,
        ),
    ],
)  # fmt: skip
def test_depth_of_shapes(message: bytes, expected: int) -> None:
    assert email_depth(message) == expected  # what the email package builds...
    assert depth(message) == expected  # ...is what is measured
    assert depth(message.replace(b"\r\n", b"\n")) == expected  # a file saved with bare LF


EOLS = (b"\r\n", b"\n", b"\r")
SPECIAL_CONTENT_TYPES = (
    b'Content-Type: multipart/%s;\r\n  boundary="%s"',  # folded
    b'Content-Type: multipart/%s; boundary*0="%s"; boundary*1="x"',  # RFC 2231 continued
    b'Content-Type: multipart/%s; boundary="=?utf-8?q?%s?="',  # an encoded word
    b"content-type: MULTIPART/%s; BOUNDARY=%s",
    b"Content-Type : multipart/%s; boundary=%s",  # no field for the parser
    b"Content-Type: multipart/%s; boundary=%s (a comment)",
    b"Content-Type: multipart/%s; boundary*=utf-8''%%C3%%A9%s",  # a character no line holds
)


def generated(r: random.Random, level: int = 0, bounds: tuple[bytes, ...] = ()) -> bytes:
    """A message (or part) of random MIME shape, often broken the ways real mail is."""
    nl = r.choice(EOLS) if r.random() < 0.1 else b"\r\n"
    kind = r.choice(["text", "multipart", "message", "ds", "digest", "no-boundary", "special"])
    kind = "text" if level >= 8 else kind
    fields = [b"From someone" + nl] if r.random() < 0.2 else []
    if r.random() < 0.5:
        fields.append(b"Subject: x" + nl)
    if kind == "text":
        if r.random() < 0.7:
            fields.append(b"Content-Type: text/plain" + nl)
        lines = []
        for _ in range(r.randint(0, 4)):
            c = r.random()
            if c < 0.3 and bounds:
                lines.append(b"--" + r.choice(bounds) + r.choice([b"", b"--", b"x", b"  ", b"-- "]))
            else:
                lines.append(r.choice([b"-- sig", b"", b"a -- b", b"hello"]))
        body = nl.join(lines) + (nl if lines else b"")
    elif kind in ("multipart", "digest", "no-boundary", "special"):
        b = r.choice([b"b%d" % level, b"b", b"b%dx" % level, b"=_%d" % r.randint(0, 3), b""])
        sub = b"digest" if kind == "digest" else r.choice([b"mixed", b"alternative", b"related"])
        if kind == "no-boundary":
            fields.append(b"Content-Type: multipart/" + sub + nl)
        elif kind == "special":
            form = r.choice(SPECIAL_CONTENT_TYPES)
            fields.append(form.replace(b"\r\n", nl) % (sub, b) + nl)
        else:
            fields.append(b"Content-Type: multipart/" + sub + b'; boundary="' + b + b'"' + nl)
        inner = (*bounds, b)
        body = b"preamble" + nl if r.random() < 0.3 else b""
        for _ in range(r.randint(0, 3)):
            body += b"--" + b + r.choice([b"", b"", b"  "]) + nl
            if r.random() < 0.1:
                body += b"--" + b + nl  # delimiters in a row
            if kind == "digest" and r.random() < 0.5:
                body += nl + generated(r, level + 2, inner)
            else:
                body += generated(r, level + 1, inner)
        if r.random() < 0.8:
            body += b"--" + b + b"--" + nl
        if r.random() < 0.3:
            body += b"epilogue" + nl + b"--" + b + nl
    elif kind == "message":
        fields.append(b"Content-Type: message/" + r.choice([b"rfc822", b"global", b"partial"]) + nl)
        body = generated(r, level + 1, bounds)
    else:
        fields.append(b"Content-Type: message/delivery-status" + nl)
        blocks = [
            r.choice([
                b"Reporting-MTA: dns; x" + nl,
                b"Content-Type: message/rfc822" + nl + b"X: y" + nl,
                b"Content-Type: multipart/mixed; boundary=q" + nl + b"--q" + nl
                + b"Content-Type: message/rfc822" + nl + b"A: b" + nl,
            ])
            for _ in range(r.randint(1, 3))
        ]  # fmt: skip
        body = nl.join(blocks)
    return b"".join(fields) + (nl if r.random() < 0.9 else b"") + body


@pytest.mark.parametrize("block", [limits._BLOCK, 1, 7])  # names cut across reads too
def test_depth_is_the_email_packages_for_generated_messages(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # and the cheap bound never says "cannot be deeper" of a message that is: deeper_than
    # agrees with the depth for every limit
    monkeypatch.setattr(limits, "_BLOCK", block)
    r = random.Random(20261207)
    seen = set()
    for _ in range(600 if block == limits._BLOCK else 150):
        message = generated(r)
        expected = email_depth(message)
        seen.add(expected)
        for limit in (1000, 2, 0):
            assert depth(message, limit) == min(expected, limit + 1), message
        for limit in range(expected + 2):
            assert limits.deeper_than(io.BytesIO(message), limit) is (expected > limit), message
    assert max(seen) >= 6  # the shapes went deep enough to tell


def test_a_boundary_only_policy_default_reads_is_followed_with_it() -> None:
    # compat32 sees one part (the boundary "=?utf-8?q?a1?=" is on no line); policy.default
    # decodes it to "a1" and builds 150 levels, beyond what its walks survive
    inner = TEXT
    for i in range(150):
        b = b"a%d" % i
        inner = (
            b'Content-Type: multipart/mixed; boundary="=?utf-8?q?' + b + b'?="\r\n\r\n'
            + b"--" + b + b"\r\n" + inner + b"--" + b + b"--\r\n"
        )  # fmt: skip
    message = HEAD + inner
    assert tree_depth(BytesParser(policy=policy.compat32).parsebytes(message)) == 0
    assert depth(message, LIMIT) == LIMIT + 1 and depth(message, 1000) == 150


def test_a_message_nested_thousands_deep_is_counted_to_the_limit_only() -> None:
    message = nested_message(5000, HEAD, TEXT)
    assert depth(message, LIMIT) == LIMIT + 1  # no RecursionError out of it
    assert limits.deeper_than(io.BytesIO(message), LIMIT)
    assert depth(nested_message(LIMIT, HEAD, TEXT), LIMIT) == LIMIT
    assert not limits.deeper_than(io.BytesIO(nested_message(LIMIT, HEAD, TEXT)), LIMIT)


def test_ordinary_mail_is_not_parsed_for_its_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fifty levels need more than 25 Content-Type fields: a message naming fewer is not parsed
    # (a 20 MB attachment costs a count of its bytes, not a parse); one naming more is.
    def parsed(source: Any, limit: int) -> int:
        raise AssertionError("parsed")

    few = nested_message(10, HEAD, TEXT + base64.encodebytes(bytes(2_000_000)))
    monkeypatch.setattr(limits, "mime_depth", parsed)
    source = io.BytesIO(few)
    source.seek(3)
    assert not limits.deeper_than(source, 50)
    assert source.tell() == 3  # left where it stood
    with pytest.raises(AssertionError, match="parsed"):
        limits.deeper_than(io.BytesIO(nested_message(30, HEAD, TEXT)), 50)


def _with_frames(n: int, fn: Callable[[], Any]) -> Any:
    """`fn()` called under `n` more frames: a caller deep in its own stack."""
    return fn() if n == 0 else _with_frames(n - 1, fn)


def test_every_walk_of_the_gateway_holds_at_the_limit() -> None:
    # A message exactly at the limit, with a large attachment at the bottom: each place the
    # gateway parses and walks a message (the content rules' text, attachment names and
    # attachments; the PDF's text size; large attachments as links; parts kept apart in the
    # store; the PDF's contents), called 200 frames deep, survives with Python's stack.
    data = base64.encodebytes(bytes(range(256)) * 6000).replace(b"\n", b"\r\n")
    innermost = (
        b"Content-Type: application/pdf; name=scan.pdf\r\n"
        b"Content-Disposition: attachment; filename=scan.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + data
    )
    message = nested_message(LIMIT, HEAD, innermost)
    assert depth(message, LIMIT) == LIMIT == email_depth(message)
    head, _, _ = message.partition(b"\r\n\r\n")
    fields = [tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")]
    headers = [(n.decode(), v.decode()) for n, v in fields]
    offset = len(head) + 4
    scope = ("subject", "text", "attachment_names")
    from zivmilter.mail import pdf  # the PDF stack: only where encryption.pdf is on

    walks: dict[str, Callable[[], Any]] = {
        "parts_of_message": lambda: parts_of_message(message, scope),
        "parts_of_body": lambda: parts_of_body(headers, message, offset, scope),
        "attachments_of_message": lambda: attachments_of_message(message, 10**7),
        "pdf_text_bytes": lambda: pdf_text_bytes(headers, message, offset),
        "pdf_text_bytes_of_message": lambda: pdf_text_bytes_of_message(message),
        "replace_large": lambda: attachments.replace_large(
            io.BytesIO(message), 100_000, lambda name, ctype, data: "https://x.example/d/t"
        ),
        "large_attachments": lambda: parts.large_attachments(io.BytesIO(message), 1024 * 1024),
        "pdf_contents": lambda: pdf._contents(
            BytesParser(policy=policy.default).parsebytes(message)  # type: ignore[arg-type]
        ),
    }
    for name, walk in walks.items():
        assert _with_frames(200, walk) is not None, name
    replaced = attachments.replace_large(io.BytesIO(message), 100_000, lambda *a: "https://l/")
    assert replaced is not None and len(replaced[1]) == 1  # the attachment did become a link
    # the first attached message is one leaf, as the portal offers it: the store keeps it apart
    (found,) = parts.large_attachments(io.BytesIO(message), 1024 * 1024)
    assert found.filename == "message.eml" and len(found.data) > 1024 * 1024
