"""Benchmark: recipient decisions per second of the pure policy core, on one core.

A 50-recipient message with mixed facts (accounts, IDD, NTA 7516, levels, contact book, custom
access rights, an ODD domain) under both tables. Target: at least 100,000 decisions/s.
Run: .venv/bin/python bench/policy.py
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from zivmilter.core import config
from zivmilter.core.assess import assess
from zivmilter.core.directives import parse
from zivmilter.core.facts import facts_from_mapping
from zivmilter.core.message import build_envelope
from zivmilter.core.policy import decide

TARGET = 100_000
LEVELS = ["none", "tls", "pkix", "pane", "dane"]


def scenario() -> tuple[object, object, list[tuple[str, str]], list[str]]:
    cfg = config.from_mapping(
        {
            "organization": {"domains": ["hospital.example"], "nta7516": True},
            "policy": {
                "transport_security_compliance": "pane",
                "outbound_direct_delivery": {"domains": ["d7.example"]},
            },
        }
    )
    rcpts = [f"user{i}@d{i % 10}.example" for i in range(50)]
    facts = facts_from_mapping(
        {
            "accounts": rcpts[0:50:7],
            "idd": ["d3.example"],
            "transport": {f"d{i}.example": LEVELS[i % 5] for i in range(10)},
            "nta7516": ["d4.example"],
            "contacts": {
                **{r: {"sms": "+31612345678"} for r in rcpts[1:50:9]},
                **{r: {"access_code": True} for r in rcpts[2:50:11]},
            },
        }
    )
    headers = [
        ("From", "a@hospital.example"),
        ("To", ", ".join(rcpts[:20])),
        ("Cc", ", ".join(rcpts[20:30])),
    ]
    headers += [
        ("zivver-access-right", f"{r} access-code code{i}") for i, r in enumerate(rcpts[3:50:5])
    ]
    return cfg, facts, headers, rcpts


def measure(label: str, fn, per_call: int, seconds: float = 2.0) -> float:  # type: ignore[no-untyped-def]
    fn()
    calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            fn()
        calls += 20
    rate = calls * per_call / elapsed
    print(f"{label:<58} {rate:>12,.0f} decisions/s  ({elapsed / calls * 1e6:,.0f} µs per message)")
    return rate


def main() -> int:
    cfg, facts, headers, rcpts = scenario()
    for table, extra in (("table A", []), ("table B", [("zivver-direct-delivery", "tls tls1.2")])):
        hs = headers + extra
        envelope = build_envelope("a@hospital.example", rcpts, hs)
        found = parse(hs, frozenset(envelope.recipients))
        core = measure(
            f"core decide(), 50 recipients, {table}",
            lambda e=envelope, f=found: decide(e, f, cfg, facts),
            50,
        )  # type: ignore[arg-type]
        full = measure(
            f"assess() incl. directive + address parsing, {table}",
            lambda h=hs: assess(h, "a@hospital.example", rcpts, cfg, facts),  # type: ignore[arg-type]
            50,
        )
    ok = core >= TARGET
    print(f"target {TARGET:,} decisions/s for the core: {'met' if ok else 'NOT met'}")
    print(
        f"(full path rate {full:,.0f}/s includes header parsing the milter does once per message)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
