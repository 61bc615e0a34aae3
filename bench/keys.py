"""Benchmark: what a recipient's own key costs the milter (issue 26): judging a key (once per
key and address per `encryption.cache_ttl`: GnuPG or OpenSSL runs) and encrypting a 5 KB
letter to it (every message). Figures only; under load, compare runs of the same sitting.
Run: .venv/bin/python bench/keys.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.harness.keys import GnuPG, SmimeCA
from zivmilter.core.keys import Candidate, KeyKind, KeySource, RecipientKey
from zivmilter.keys import formats, judge

LETTER = (
    b"From: alice@hospital.example\r\nTo: bob@partner.example\r\nSubject: Lab results\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + b"x" * 5000 + b"\r\n"
)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp, GnuPG(Path(tmp) / "gnupg") as gpg:
        cert = gpg.generate("Bob <bob@partner.example>")
        ca = SmimeCA()
        trust = str(ca.write_pem(Path(tmp) / "ca.pem"))
        leaf = ca.issue("bob@partner.example")
        now = datetime.now(UTC)
        pgp = Candidate(KeyKind.OPENPGP, cert, KeySource.KEYSTORE, "bench")
        smime = Candidate(KeyKind.SMIME, leaf.der, KeySource.KEYSTORE, "bench")
        validate = judge.validator(trust)
        for name, candidate in (("openpgp", pgp), ("smime", smime)):
            key = validate(candidate, "bob@partner.example", now)
            assert isinstance(key, RecipientKey), key
            ms = median_ms(lambda c=candidate: validate(c, "bob@partner.example", now), 20)
            enc = median_ms(lambda k=key: formats.encrypt_message(LETTER, [k], "..."), 200)
            print(f"{name:8} judge {ms:7.1f} ms (median of 20)   encrypt 5 KB {enc:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
