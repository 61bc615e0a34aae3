"""The plain messages the end-to-end tests submit through Postfix or Sendmail (test_milter_e2e.py,
test_sendmail_e2e.py): one sender, fixed date, UTF-8 text, CRLF throughout (Sendmail refuses a
bare LF in DATA: 554 5.6.0).
"""

from __future__ import annotations

PHONE = "+31612345678"  # an SMS number in an access-right directive
CODE = "tulip-secret-42"  # an access code in an access-right directive


def plain_message(headers: str, body: str) -> bytes:
    """`headers` (LF-separated, each ending in LF) after the fixed ones, then `body`."""
    base = (
        "From: Dr. Alice <alice@hospital.example>\r\n"
        "Date: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    )
    return (base + headers.replace("\n", "\r\n") + "\r\n" + body + "\r\n").encode()


def nested_message(depth: int, headers: bytes, innermost: bytes) -> bytes:
    """A message whose parts nest `depth` levels deep: multipart/mixed (a line of text and the
    next level) and attached messages (message/rfc822) in turn, `innermost` (a part: its header
    fields, a blank line, its body) at the bottom. `headers`: the message's own fields (CRLF)."""
    part = innermost
    for level in range(depth, 0, -1):
        if level % 2:
            b = b"level-%d" % level
            part = (
                b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n'
                b"--"
                + b
                + b"\r\nContent-Type: text/plain\r\n\r\nlevel %d\r\n" % level
                + b"--"
                + b
                + b"\r\n"
                + part
                + b"\r\n--"
                + b
                + b"--\r\n"
            )
        else:
            part = (
                b"Content-Type: message/rfc822\r\n\r\n"
                b"From: alice@hospital.example\r\nSubject: Fw: level %d\r\n" % level + part
            )
    return headers + part
