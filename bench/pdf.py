#!/usr/bin/env python3
"""How long the encrypted PDF (mail/pdf.py, issue 26) takes per message, by size of text and
attachments: the time the gateway spends per PDF recipient at end-of-message; the last two
cases are the largest messages `encryption.pdf_max_bytes` lets through (its default, all text or
mostly one attachment).

    PYTHONPATH=. .venv/bin/python bench/pdf.py [--runs 3]

Prints one line per case: the median seconds and the PDF's size. Relative figures under load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from email.message import EmailMessage

from zivmilter import defaults
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


def at_cap(attachment: bool, cap: int = defaults.PDF_MAX_BYTES) -> tuple[int, int]:
    """(text KB, attachment KB) of the largest such message no larger than `cap` bytes."""
    low, high = 0, cap // 1024  # what is sent is never smaller than the KB put in

    def case(kb: int) -> tuple[int, int]:
        return (2, kb) if attachment else (kb, 0)

    while low < high:  # the largest kb whose message fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(message(*case(mid))) <= cap else (low, mid - 1)
    return case(low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = [(2, 0), (50, 0), (500, 0), (2, 10_240), at_cap(False), at_cap(True)]
    for text_kb, attachment_kb in cases:
        data = message(text_kb, attachment_kb)
        times, size = [], 0
        for _ in range(args.runs):
            start = time.perf_counter()
            size = len(encrypted_pdf(data, "K7QX-93PL-ZZ2M"))
            times.append(time.perf_counter() - start)
        print(
            f"text {text_kb:>5} KB, attachment {attachment_kb:>6} KB"
            f" (message {len(data) / 1024:>6,.0f} KB): "
            f"{statistics.median(times):6.2f} s median of {args.runs}, PDF {size / 1024:,.0f} KB"
        )


if __name__ == "__main__":
    main()
