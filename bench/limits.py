"""Benchmark: what the MIME nesting check (core/limits.py deeper_than: the Content-Type fields
that may name a multipart or message/* type counted, and a parse by the `email` package only
where enough are) costs per message, which the gateway runs on every message before anything
else; beside it, what one parse of the same message by the `email` package costs (compat32),
which the gateway does at least once for most secured mail with content rules or attachments.
Shapes: a 5 KB letter, a 40 KB multipart with a PDF, a 20 MB attachment, 1,000 small
attachments, and a message nested to the limit.

Run: .venv/bin/python bench/limits.py   (ROUNDS=5 to change the effort)
On a loaded machine the figures are relative: compare the two columns of one run.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import compat32

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.harness.messages import nested_message
from zivmilter import defaults
from zivmilter.core.limits import deeper_than

ROUNDS = int(os.environ.get("ROUNDS", "5"))
HEAD = (
    b"From: Dr. Alice <alice@hospital.example>\r\nTo: bob@partner.example\r\n"
    b"Subject: results\r\nMessage-ID: <b@hospital.example>\r\nMIME-Version: 1.0\r\n"
)


def _base64(size: int) -> bytes:
    return base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")


def _multipart(attachment: bytes, count: int = 1) -> bytes:
    parts = [b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDear Bob,\r\n"]
    for i in range(count):
        parts.append(
            b"--zz\r\nContent-Type: application/pdf; name=f%d.pdf\r\n" % i
            + b"Content-Disposition: attachment; filename=f%d.pdf\r\n" % i
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + attachment
        )
    body = b"".join(parts) + b"--zz--\r\n"
    return HEAD + b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n" + body


SHAPES: dict[str, bytes] = {
    "letter 5 KB": HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + b"x" * 70 * 70,
    "multipart 40 KB": _multipart(_base64(30_000)),
    "attachment 20 MB": _multipart(_base64(15_000_000)),
    "1,000 attachments": _multipart(_base64(30), 1000),
    "nested to the limit": nested_message(
        defaults.MIME_NESTING_LIMIT, HEAD, b"Content-Type: text/plain\r\n\r\nx\r\n"
    ),
}


def _best(fn: Callable[[], object], n: int) -> float:
    """The fastest of ROUNDS rounds of `n` calls, per call, in microseconds."""
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def main() -> None:
    print(f"{'message':<22} {'bytes':>10} {'deeper_than us':>15} {'email parse us':>15}")
    for name, data in SHAPES.items():
        n = max(1, 2_000_000 // len(data))
        scan = _best(lambda d=data: deeper_than(io.BytesIO(d), defaults.MIME_NESTING_LIMIT), n)
        parse = _best(lambda d=data: BytesParser(policy=compat32).parsebytes(d), max(1, n // 4))
        print(f"{name:<22} {len(data):>10} {scan:>15.0f} {parse:>15.0f}")


if __name__ == "__main__":
    main()
