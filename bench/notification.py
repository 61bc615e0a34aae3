"""Benchmark: the CPU time of one notification (mail/notification.py: its templates rendered in
the recipient's language through the gettext catalogs, and its bytes written), per language.

The milter writes one per notification recipient, on its hot path. CPU time (process_time),
the best of five rounds, so that a loaded machine reads about the same; compare two checkouts
in one run (A/B), the figure of one machine is no target.
Run: .venv/bin/python bench/notification.py
"""

from __future__ import annotations

import os
import sys
import time
from email.message import Message

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from zivmilter import defaults
from zivmilter.mail.notification import Verification, draft_notification

ROUNDS, N = 5, 2000


def main() -> None:
    msg = Message()
    msg["From"] = "Dr. Alice Example <alice@hospital.example>"
    msg["To"] = "bob@example.net"
    msg["Subject"] = "Your results"

    def one(language: str) -> bytes:
        return draft_notification(
            msg, recipient="bob@example.net", link="https://secure.hospital.example/m/x",
            verification=Verification("sms", phone="+31612345678"), language=language,
            subject_mode="show", org_domain="hospital.example", org_name="Hospital",
        ).wire()  # fmt: skip

    for language in defaults.LANGUAGES:
        one(language)
        best = float("inf")
        for _ in range(ROUNDS):
            start = time.process_time()
            for _ in range(N):
                one(language)
            best = min(best, (time.process_time() - start) / N)
        print(f"notification ({language}): {best * 1e6:.0f} µs CPU each")


if __name__ == "__main__":
    main()
