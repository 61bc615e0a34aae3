#!/usr/bin/env python3
"""How long the encrypted PDF (mail/pdf.py, issue 26) takes per message, by size of text and
attachments: the time the gateway spends per PDF recipient at end-of-message. Then the largest
messages the defaults' bounds concern: all text or mostly one attachment at
`encryption.pdf_max_bytes` (sizes as the MTA passes them, CRLF); all text at
`encryption.pdf_max_text_bytes`; and the most a PDF is made of by default, that much text and an
attachment up to pdf_max_bytes.

    PYTHONPATH=. .venv/bin/python bench/pdf.py [--runs 3]
    PYTHONPATH=. .venv/bin/python bench/pdf.py --letter [--runs 30]

`--letter` times only a small letter (2 KB of text, no attachment), what most PDFs are, and
beside it what every PDF pays for its fonts whatever its text: a new document with DejaVu Sans
(regular and bold) added, a word written in each, the subsets embedded (no encryption).

The cases take turns, run after run, so that the machine's load moves them alike. Prints one
line per case: the median seconds (and CPU seconds, which the load of a shared machine moves
less), the PDF's size, the text the milter counts (bodytext.pdf_text_bytes) and how long that
count takes, and whether the defaults make a PDF (`refused` when not). Relative figures under
load.
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
from zivmilter.mail.pdf import FONT_DIR, _document, encrypted_pdf

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


def fonts_alone() -> bytes:
    """A document with the PDF's fonts, a word in each, written out: the fonts' share of a PDF."""
    doc = _document(FONT_DIR)
    doc.add_page()
    for style in ("", "B"):
        doc.set_font("DejaVu", style, 10)
        doc.cell(text="Grüße")
    return bytes(doc.output())


def letter(runs: int) -> None:
    """The small letter and the fonts alone, in turn, `runs` times; medians (and CPU)."""
    data = message(2, 0)
    cases: dict[str, Callable[[], bytes]] = {
        "small letter (2 KB text), whole encrypted PDF": lambda: encrypted_pdf(data, "K7QX"),
        "fonts alone (added, a word each, embedded)": fonts_alone,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for make in cases.values():  # once before timing: imports, first-use caches
        make()
    for _ in range(runs):
        for name, make in cases.items():
            start, cpu = time.perf_counter(), time.process_time()
            make()
            times[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - cpu)
    for name in cases:
        print(
            f"{name}: {statistics.median(times[name]) * 1000:6.1f} ms median of {runs}"
            f" ({statistics.median(cpus[name]) * 1000:6.1f} ms CPU)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--letter", action="store_true", help="a small letter and the fonts")
    args = parser.parse_args()
    if args.letter:
        letter(args.runs)
        return
    cases = [(2, 0), (50, 0), (500, 0), (2, 10_240)]
    cases += [at_cap(False), at_cap(True), at_text_cap(), most_allowed()]
    messages = [message(*case) for case in cases]
    counters = [count(wire(data)) for data in messages]
    times: list[list[float]] = [[] for _ in cases]
    cpus: list[list[float]] = [[] for _ in cases]
    counts: list[list[float]] = [[] for _ in cases]
    texts, sizes = [0] * len(cases), [0] * len(cases)
    for _ in range(args.runs):  # the cases in turn, run after run: the load moves all alike
        for i, data in enumerate(messages):
            start = time.perf_counter()
            texts[i] = counters[i]()
            counts[i].append(time.perf_counter() - start)
            start, cpu = time.perf_counter(), time.process_time()
            sizes[i] = len(encrypted_pdf(data, "K7QX-93PL-ZZ2M"))
            times[i].append(time.perf_counter() - start)
            cpus[i].append(time.process_time() - cpu)
    for i, (text_kb, attachment_kb) in enumerate(cases):
        sent = len(wire(messages[i]))
        refused = (
            "refused (pdf_max_bytes)"
            if sent > defaults.PDF_MAX_BYTES
            else "refused (pdf_max_text_bytes)"
            if texts[i] > defaults.PDF_MAX_TEXT_BYTES
            else "made"
        )
        print(
            f"text {text_kb:>5} KB, attachment {attachment_kb:>6} KB"
            f" (message {sent / 1024:>6,.0f} KB, text counted {texts[i] / 1024:>6,.0f} KB in"
            f" {statistics.median(counts[i]) * 1000:,.0f} ms): "
            f"{statistics.median(times[i]):6.2f} s median of {args.runs}"
            f" ({statistics.median(cpus[i]):5.2f} s CPU), PDF {sizes[i] / 1024:,.0f} KB;"
            f" by default {refused}"
        )


if __name__ == "__main__":
    main()
