"""The milter's live transport facts over an in-memory prober: cache, misses, TTLs, refresher.

The prober is a fake (the real one is tested against real DNS and TLS in tests/integration);
the SQLite cache and the clock are real objects, the clock a settable one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from zivmilter import defaults
from zivmilter.core import config as config_mod
from zivmilter.core.config import Config
from zivmilter.core.facts import with_config
from zivmilter.core.levels import Level, TlsVersion
from zivmilter.transport.cache import TransportCache, db_path
from zivmilter.transport.live import TransportFacts
from zivmilter.transport.model import DomainResult, HostResult, NtaLookup
from zivmilter.transport.odd import refresh

T0 = 1_900_000_000.0
NTA = "v=NTA7516-1;startdate=2020-01;enddate=2099-12;provider=P;ntamx=10 nta-mx.example"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeProber:
    """Answers from a table; counts calls; can be held back to simulate a slow probe."""

    def __init__(self, clock: Clock, levels: dict[str, Level]) -> None:
        self.clock = clock
        self.levels = levels
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.nta: dict[str, NtaLookup] = {}
        self.ntamx: dict[str, tuple[HostResult, ...]] = {}

    def __call__(self, domain: str) -> DomainResult:
        self.calls.append(domain)
        self.gate.wait(10)
        level = self.levels.get(domain, Level.NONE)
        version = TlsVersion.TLS1_3 if level is not Level.NONE else None
        host = HostResult(f"mx.{domain}", 10, level=level, reason=f"{level.value} by fake")
        return DomainResult(
            domain,
            level,
            version,
            f"fake says {level.value}",
            self.clock(),
            (host,),
            self.nta.get(domain, NtaLookup()),
            self.ntamx.get(domain, ()),
        )


def _config(tmp_path: Path, **extra: object) -> Config:
    return config_mod.from_mapping(
        {
            "organization": {"domains": ["sender.example"]},
            "store": {"path": str(tmp_path)},
            "transport": {"cache_ttl_success": 86400, "cache_ttl_failure": 3600},
            **extra,
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _facts(cfg: Config, prober: FakeProber, clock: Clock, wait: float = 1.0) -> TransportFacts:
    return TransportFacts(cfg, prober=prober, clock=clock, wait=wait)


def test_miss_waits_for_a_quick_probe(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {"pkix.example": Level.PKIX})
    with _facts(_config(tmp_path), prober, clock) as facts:
        fact = facts.transport("pkix.example")
        assert fact.level is Level.PKIX and fact.tls_version is TlsVersion.TLS1_3
        assert facts.transport("PKIX.Example.") == fact  # normalized on a miss
        assert prober.calls == ["pkix.example"]


def test_slow_probe_answers_none_within_the_wait(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {"slow.example": Level.DANE})
    prober.gate.clear()
    with _facts(_config(tmp_path), prober, clock, wait=defaults.FACTS_WAIT) as facts:
        started = time.monotonic()
        fact = facts.transport("slow.example")
        took = time.monotonic() - started
        assert fact.level is Level.NONE and "not probed yet" in fact.reason
        assert took < defaults.FACTS_WAIT + 0.1
        prober.gate.set()
        deadline = time.monotonic() + 5
        while facts.transport("slow.example").level is Level.NONE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert facts.transport("slow.example").level is Level.DANE


def test_concurrent_misses_probe_once(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {"busy.example": Level.PANE})
    prober.gate.clear()
    with _facts(_config(tmp_path), prober, clock, wait=0.01) as facts:
        seen: list[Level] = []
        threads = [
            threading.Thread(target=lambda: seen.append(facts.transport("busy.example").level))
            for _ in range(20)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        prober.gate.set()
        assert seen == [Level.NONE] * 20
        time.sleep(0.2)
        assert prober.calls == ["busy.example"]


def test_success_and_failure_ttls(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {"good.example": Level.PKIX, "bad.example": Level.NONE})
    with _facts(_config(tmp_path), prober, clock) as facts:
        facts.transport("good.example")
        facts.transport("bad.example")
        clock.now = T0 + 3601  # past the failure TTL, within the success TTL
        facts.transport("good.example")
        facts.transport("bad.example")
        assert prober.calls == ["good.example", "bad.example", "bad.example"]
        clock.now = T0 + 86401
        facts.transport("good.example")
        assert prober.calls[-1] == "good.example" and len(prober.calls) == 4


def test_results_persist_in_sqlite(tmp_path: Path, clock: Clock) -> None:
    cfg = _config(tmp_path)
    prober = FakeProber(clock, {"kept.example": Level.DANE})
    with _facts(cfg, prober, clock) as facts:
        facts.transport("kept.example")
    cache = TransportCache(db_path(cfg))
    try:
        row = cache.get("kept.example")
    finally:
        cache.close()
    assert row is not None and row.expires_at == T0 + 86400
    assert row.result.level is Level.DANE and row.result.mx[0].host == "mx.kept.example"
    other = FakeProber(clock, {})
    with _facts(cfg, other, clock) as facts:
        assert facts.transport("kept.example").level is Level.DANE
    assert other.calls == []  # answered from the file, no probe


def test_refresher_reprobes_domains_in_use_before_expiry(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {"used.example": Level.PKIX, "idle.example": Level.PKIX})
    with _facts(_config(tmp_path), prober, clock) as facts:
        facts.transport("used.example")
        facts.transport("idle.example")
        clock.now = T0 + 86400 - 2 * 3600
        facts.transport("used.example")  # still in use
        assert facts.refresh_pass() == []  # not yet within an hour of expiry
        clock.now = T0 + 86400 - 1800
        assert facts.refresh_pass() == ["used.example", "idle.example"]
        time.sleep(0.2)
        clock.now = T0 + 86400 + 1
        prober.calls.clear()
        assert facts.transport("used.example").level is Level.PKIX
        assert prober.calls == []  # the refresher's probe answered; no miss at expiry
        # Far later, an entry nobody asked for is forgotten instead of refreshed.
        clock.now = T0 + 10 * 86400
        assert facts.refresh_pass() == []


def test_failure_entries_refresh_late_enough(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {})
    with _facts(_config(tmp_path), prober, clock) as facts:
        facts.transport("down.example")
        clock.now = T0 + 60
        assert facts.refresh_pass() == []  # not on every pass
        clock.now = T0 + 3600 - 600
        assert facts.refresh_pass() == ["down.example"]


def test_prober_fault_is_level_none(tmp_path: Path, clock: Clock) -> None:
    def broken(domain: str) -> DomainResult:
        raise RuntimeError("bug")

    with TransportFacts(_config(tmp_path), prober=broken, clock=clock, wait=1.0) as facts:
        assert facts.transport("x.example").level is Level.NONE


def test_invalid_domain(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {})
    with _facts(_config(tmp_path), prober, clock) as facts:
        assert facts.transport("not a domain").reason == "not a domain name"
        assert not facts.nta7516("not a domain").compliant
        assert prober.calls == []


def test_nta7516(tmp_path: Path, clock: Clock) -> None:
    lists = {"domains": ["added.example"], "exclude": ["declared-but-excluded.example"]}
    cfg = _config(tmp_path, nta7516=lists)
    prober = FakeProber(clock, {})
    prober.nta["declared.example"] = NtaLookup((NTA,), True)
    prober.nta["declared-but-excluded.example"] = NtaLookup((NTA,), True)
    prober.nta["unsigned.example"] = NtaLookup((NTA,), False)
    with _facts(cfg, prober, clock) as live:
        facts = with_config(live, cfg)  # the config's lists go on top, as for the milter
        fact = facts.nta7516("declared.example")
        assert fact.compliant and fact.mx == ("nta-mx.example",)
        assert not facts.nta7516("declared-but-excluded.example").compliant
        assert facts.nta7516("added.example").compliant
        assert not facts.nta7516("unsigned.example").compliant
    assert "added.example" not in prober.calls  # the config alone answers


def test_nta7516_carries_the_ntamx_level(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {"declared.example": Level.NONE})
    prober.nta["declared.example"] = NtaLookup((NTA,), True)
    prober.ntamx["declared.example"] = (
        HostResult("nta-mx.example", 10, level=Level.PKIX, tls_version="TLSv1.3", reason="ca"),
    )
    with _facts(_config(tmp_path), prober, clock) as facts:
        fact = facts.nta7516("declared.example")
        assert fact.compliant and fact.mx == ("nta-mx.example",)
        assert fact.mx_transport is not None
        assert fact.mx_transport.level is Level.PKIX
        assert fact.mx_transport.tls_version is TlsVersion.TLS1_3
        assert fact.mx_transport.reason == "nta-mx.example: ca"
        assert facts.transport("declared.example").level is Level.NONE  # the MX's own level


def test_old_cache_row_without_ntamx_results_is_probed_again(tmp_path: Path, clock: Clock) -> None:
    cfg = _config(tmp_path)
    old = DomainResult(
        "declared.example",
        Level.PKIX,
        TlsVersion.TLS1_2,
        "mx ok",
        T0,
        (HostResult("mx.declared.example", 10, level=Level.PKIX),),
        NtaLookup((NTA,), True),
    )
    cache = TransportCache(db_path(cfg))
    cache.put(old, T0 + 86400)
    cache.close()
    prober = FakeProber(clock, {"declared.example": Level.PKIX})
    prober.nta["declared.example"] = NtaLookup((NTA,), True)
    prober.ntamx["declared.example"] = (HostResult("nta-mx.example", 10, level=Level.DANE),)
    with _facts(cfg, prober, clock) as facts:
        first = facts.nta7516("declared.example")
        # Loaded as it is (the MX level still answers), but rule 2 waits for the ntamx probe.
        assert first.compliant and first.mx_transport is None
        assert facts.transport("declared.example").level is Level.PKIX
        deadline = time.monotonic() + 5
        while facts.nta7516("declared.example").mx_transport is None:
            assert time.monotonic() < deadline, "the ntamx hosts were never probed"
            time.sleep(0.01)
        again = facts.nta7516("declared.example").mx_transport
        assert again is not None and again.level is Level.DANE
    assert prober.calls == ["declared.example"]


def test_odd_listed(tmp_path: Path, clock: Clock) -> None:
    url = "https://lists.example/odd.txt"
    cfg = _config(tmp_path, policy={"outbound_direct_delivery": {"lists": [url]}})
    refresh(cfg, T0, fetch=lambda u: b"partner.example\n")
    with _facts(cfg, FakeProber(clock, {}), clock) as facts:
        assert facts.odd_listed("partner.example")
        assert facts.odd_listed("Partner.Example")
        assert not facts.odd_listed("other.example")
        clock.now = T0 + 8 * 86400
        facts.reload_odd()
        assert not facts.odd_listed("partner.example")


def test_warm_lookups_are_fast(tmp_path: Path, clock: Clock) -> None:
    prober = FakeProber(clock, {"warm.example": Level.PANE})
    with _facts(_config(tmp_path), prober, clock) as facts:
        facts.transport("warm.example")
        started = time.perf_counter()
        for _ in range(10_000):
            facts.transport("warm.example")
        per_call = (time.perf_counter() - started) / 10_000
    assert per_call < 50e-6  # microseconds, with a wide margin for slow CI machines
