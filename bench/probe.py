"""Transport facts benchmark: warm-cache lookups per second, and one cold probe of a 3-MX domain.

    scripts/sandbox .venv/bin/python bench/probe.py [--domains N] [--seconds S] [--probes N]

The lookup part runs anywhere; the probe part needs the sandbox (NSD + Unbound + three STARTTLS
sinks on 127.0.5.1-3:25) and is skipped outside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.sandbox import in_sandbox
from zivmilter.core import config as config_mod
from zivmilter.core.levels import Level, TlsVersion
from zivmilter.transport.cache import TransportCache, db_path
from zivmilter.transport.live import TransportFacts
from zivmilter.transport.model import DomainResult, HostResult, NtaLookup
from zivmilter.transport.odd import refresh
from zivmilter.transport.probe import Prober


def _no_probe(domain: str) -> DomainResult:
    raise AssertionError(f"cache miss for {domain}: the benchmark must run warm")


def bench_lookups(domains: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = "https://lists.example/odd.txt"
        cfg = config_mod.from_mapping(
            {
                "organization": {"domains": ["sender.example"]},
                "store": {"path": tmp},
                "policy": {"outbound_direct_delivery": {"lists": [url]}},
            }
        )
        names = [f"d{i}.example" for i in range(domains)]
        now = time.time()
        cache = TransportCache(db_path(cfg))
        for name in names:
            host = HostResult(
                f"mx.{name}",
                10,
                ("192.0.2.1",),
                True,
                "TLSv1.3",
                True,
                level=Level.PKIX,
                reason="CA-valid",
            )
            nta = NtaLookup(("v=NTA7516-1;startdate=2020-01;enddate=2099-12;provider=P",), True)
            result = DomainResult(name, Level.PKIX, TlsVersion.TLS1_3, "ok", now, (host,), nta)
            cache.put(result, now + 86400)
        cache.close()
        listed = "\n".join(names[::2]).encode()
        refresh(cfg, now, fetch=lambda _u: listed)
        with TransportFacts(cfg, prober=_no_probe) as facts:
            for label, call in (
                ("transport", facts.transport),
                ("nta7516", facts.nta7516),
                ("odd_listed", facts.odd_listed),
            ):
                rate = _rate(call, names, seconds)
                print(f"warm {label:<10} {rate:>12,.0f} lookups/s ({1e6 / rate:.2f} µs each)")

            def all_three(name: str) -> None:
                facts.transport(name)
                facts.nta7516(name)
                facts.odd_listed(name)

            rate = _rate(all_three, names, seconds)
            print(f"warm all three {rate:>12,.0f} recipients/s ({1e6 / rate:.2f} µs each)")


def _rate(fn: Callable[[str], object], names: list[str], seconds: float) -> float:
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for name in names:
            fn(name)
        count += len(names)
    return count / (time.perf_counter() - started)


def bench_cold_probe(runs: int) -> None:
    import ssl

    import trustme

    from tests.harness.dns import TestDns, Zone, tlsa_rdata
    from tests.harness.sink import Sink, server_tls_context

    ca = trustme.CA()
    hosts = {f"mx{i}.bench.example": f"127.0.5.{i}" for i in (1, 2, 3)}
    leaves = {h: ca.issue_cert(h) for h in hosts}
    leaf1_pem = leaves["mx1.bench.example"].cert_chain_pems[0].bytes().decode()
    leaf1 = ssl.PEM_cert_to_DER_cert(leaf1_pem)
    records = [f"@ MX {10 * i} mx{i}" for i in (1, 2, 3)]
    records += [f"{h.split('.')[0]} A {ip}" for h, ip in hosts.items()]
    records.append(f"_25._tcp.mx1 TLSA {tlsa_rdata(leaf1, 3, 1, 1)}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        TestDns([Zone("bench.example", signed=True, records=records)]) as dns,
    ):
        ca_file = f"{tmp}/ca.pem"
        ca.cert_pem.write_to_path(ca_file)
        sinks = [
            Sink(ip, 25, tls=server_tls_context(leaves[h]), hostname=h) for h, ip in hosts.items()
        ]
        for sink in sinks:
            sink.__enter__()
        try:
            cfg = config_mod.from_mapping(
                {
                    "organization": {"domains": ["sender.example"]},
                    "store": {"path": tmp},
                    "transport": {"resolver": [dns.resolver], "ca_file": ca_file},
                }
            )
            prober = Prober(cfg.transport)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                result = prober.probe("bench.example")
                times.append(time.perf_counter() - started)
            levels = ", ".join(f"{h.host}={h.level.value}" for h in result.mx)
            print(f"cold probe, 3 MX hosts ({levels}; domain {result.level.value}):")
            print(f"  first (resolver cache empty) {times[0] * 1000:7.1f} ms")
            if len(times) > 1:
                rest = [t * 1000 for t in times[1:]]
                print(
                    f"  next {len(rest)} (resolver warm)    median {statistics.median(rest):.1f}"
                    f" ms, max {max(rest):.1f} ms"
                )
        finally:
            for sink in sinks:
                sink.__exit__(None, None, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--probes", type=int, default=5)
    args = parser.parse_args()
    bench_lookups(args.domains, args.seconds)
    if in_sandbox():
        bench_cold_probe(args.probes)
    else:
        print("cold probe: skipped (run under scripts/sandbox for NSD, Unbound and TLS sinks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
