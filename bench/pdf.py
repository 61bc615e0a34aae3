#!/usr/bin/env python3
"""How long the encrypted PDF (mail/pdf.py, issue 26) takes per message, by size of text and
attachments: the time the gateway spends per PDF recipient at end-of-message. Then the largest
messages the defaults' bounds concern: all text or mostly one attachment at
`encryption.pdf_max_bytes` (sizes as the MTA passes them, CRLF); all text at
`encryption.pdf_max_text_bytes`; and the most a PDF is made of by default, that much text and an
attachment up to pdf_max_bytes.

    PYTHONPATH=. .venv/bin/python bench/pdf.py [--runs 3]

Prints one line per case: the median seconds, the PDF's size, the text the milter counts
(bodytext.pdf_text_bytes) and how long that count takes, and whether the defaults make a PDF
(`refused` when not). Relative figures under load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from email.message import EmailMessage

from zivmilter import defaults
from zivmilter.core.bodytext import pdf_text_bytes
from zivmilter.core.message import read_headers
from zivmilter.mail.pdf import encrypted_pdf

PARAGRAPH = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, Grüße aus Köln. " * 12


def message(text_kb: int, attachment_kb: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jörg Müller <joerg@example.de>"
    msg["To"] = "zoe@example.nl"
    msg["Subject"] = "bench"
    lines = [PARAGRAPH] * -(
        -text_kb * 1024 // (len(PARAGRAPH) + 1)
    )  # that many KB, or a little more
    msg.set_content("\n".join(lines))
    if attachment_kb:
        msg.add_attachment(
            os.urandom(attachment_kb * 1024),
            maintype="application",
            subtype="octet-stream",
            filename="data.bin",
        )
    return bytes(msg)


def wire(data: bytes) -> bytes:
    """The message as the MTA passes it to the milter: CRLF line ends."""
    return data.replace(b"\n", b"\r\n")


def text_bytes(data: bytes) -> int:
    """The text the milter counts for encryption.pdf_max_text_bytes, as it counts it."""
    return count(wire(data))()


def count(sent: bytes) -> Callable[[], int]:
    """The milter's count of the message `sent` (CRLF), with the header fields in hand (the MTA
    passes them one by one)."""
    headers = read_headers(sent)
    offset = sent.index(b"\r\n\r\n") + 4
    return lambda: pdf_text_bytes(headers, sent, offset)


def largest(
    case: Callable[[int], tuple[int, int]], fits: Callable[[bytes], bool], high: int
) -> tuple[int, int]:
    """(text KB, attachment KB) of `case(kb)` for the largest kb whose message `fits`."""
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(message(*case(mid))) else (low, mid - 1)
    return case(low)


def at_cap(attachment: bool, cap: int = defaults.PDF_MAX_BYTES) -> tuple[int, int]:
    """(text KB, attachment KB) of the largest such message no larger than `cap` bytes."""
    # what is sent is never smaller than the KB put in
    return largest(
        lambda kb: (2, kb) if attachment else (kb, 0),
        lambda data: len(wire(data)) <= cap,
        cap // 1024,
    )


def at_text_cap(cap: int = defaults.PDF_MAX_TEXT_BYTES) -> tuple[int, int]:
    """(text KB, 0) of the message with the most text no more than `cap` bytes of it."""
    return largest(lambda kb: (kb, 0), lambda data: text_bytes(data) <= cap, cap // 1024)


def most_allowed() -> tuple[int, int]:
    """Text at encryption.pdf_max_text_bytes and the largest attachment pdf_max_bytes allows."""
    text_kb, _ = at_text_cap()

    def fits(data: bytes) -> bool:
        return len(wire(data)) <= defaults.PDF_MAX_BYTES

    return largest(lambda kb: (text_kb, kb), fits, defaults.PDF_MAX_BYTES // 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = [(2, 0), (50, 0), (500, 0), (2, 10_240)]
    cases += [at_cap(False), at_cap(True), at_text_cap(), most_allowed()]
    for text_kb, attachment_kb in cases:
        data = message(text_kb, attachment_kb)
        counted = count(wire(data))
        times, counts, size, text = [], [], 0, 0
        for _ in range(args.runs):
            start = time.perf_counter()
            text = counted()
            counts.append(time.perf_counter() - start)
            start = time.perf_counter()
            size = len(encrypted_pdf(data, "K7QX-93PL-ZZ2M"))
            times.append(time.perf_counter() - start)
        sent = len(wire(data))
        refused = (
            "refused (pdf_max_bytes)"
            if sent > defaults.PDF_MAX_BYTES
            else "refused (pdf_max_text_bytes)"
            if text > defaults.PDF_MAX_TEXT_BYTES
            else "made"
        )
        print(
            f"text {text_kb:>5} KB, attachment {attachment_kb:>6} KB"
            f" (message {sent / 1024:>6,.0f} KB, text counted {text / 1024:>6,.0f} KB in"
            f" {statistics.median(counts) * 1000:,.0f} ms): "
            f"{statistics.median(times):6.2f} s median of {args.runs}, PDF {size / 1024:,.0f} KB;"
            f" by default {refused}",
            flush=True,
        )


if __name__ == "__main__":
    main()
