"""The transport cache file and the JSON form of a probe result."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from zivmilter.core.config import TransportConfig
from zivmilter.core.levels import Level, TlsVersion
from zivmilter.transport.cache import TransportCache, ttl_for
from zivmilter.transport.model import Dnssec, DomainResult, HostResult, NtaLookup, TlsaRecord

RESULT = DomainResult(
    "partner.example",
    Level.DANE,
    TlsVersion.TLS1_3,
    "all good",
    1_900_000_000.0,
    (
        HostResult(
            "mx.partner.example",
            10,
            ("192.0.2.1", "2001:db8::1"),
            True,
            "TLSv1.3",
            True,
            None,
            Dnssec(True, True, True),
            (TlsaRecord(3, 1, 1, bytes(range(32))),),
            True,
            None,
            Level.DANE,
            "DANE: matches",
        ),
    ),
    NtaLookup(("v=NTA7516-1;startdate=2020-01;enddate=2099-12;provider=P",), True),
)


def test_json_round_trip() -> None:
    assert DomainResult.from_json(RESULT.to_json()) == RESULT


def test_put_get_fresh_purge(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "transport.sqlite3")
    cache = TransportCache(path)
    try:
        cache.put(RESULT, 1_900_086_400.0)
        got = cache.get("partner.example")
        assert got is not None and got.result == RESULT and got.expires_at == 1_900_086_400.0
        assert cache.get("other.example") is None
        assert [c.result.domain for c in cache.fresh(1_900_000_001.0)] == ["partner.example"]
        assert cache.fresh(1_900_086_401.0) == []
        assert cache.purge(1_900_086_401.0) == 1
        assert cache.get("partner.example") is None
    finally:
        cache.close()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_ttls() -> None:
    cfg = TransportConfig(cache_ttl_success=100, cache_ttl_failure=10)
    assert ttl_for(RESULT, cfg) == 100
    none = DomainResult("x.example", Level.NONE, None, "no", 0.0)
    assert ttl_for(none, cfg) == 10
    errored = DomainResult(
        "x.example",
        Level.PKIX,
        TlsVersion.TLS1_2,
        "partly",
        0.0,
        (HostResult("mx", 10, level=Level.PKIX, error="TLSA lookup failed: SERVFAIL"),),
    )
    assert ttl_for(errored, cfg) == 10


def test_failed_nta_lookup_takes_the_failure_ttl() -> None:
    # The MX is fine, but the apex TXT lookup timed out: compliance is unknown, ask again soon.
    cfg = TransportConfig(cache_ttl_success=100, cache_ttl_failure=10)
    nta_timeout = dataclasses.replace(RESULT, nta=NtaLookup(error="TXT partner.example: timeout"))
    assert nta_timeout.failed
    assert ttl_for(nta_timeout, cfg) == 10
    no_record = dataclasses.replace(RESULT, nta=NtaLookup((), True))  # an answer: none published
    assert ttl_for(no_record, cfg) == 100


def test_ntamx_hosts_round_trip_and_old_rows_still_load(tmp_path: Path) -> None:
    ntamx = HostResult(
        "ntamx.partner.example",
        10,
        ("192.0.2.9",),
        True,
        "TLSv1.3",
        True,
        None,
        Dnssec(True, False, False),
        (),
        None,
        None,
        Level.PANE,
        "CA-valid certificate",
    )
    with_ntamx = dataclasses.replace(RESULT, ntamx=(ntamx,))
    assert DomainResult.from_json(with_ntamx.to_json()) == with_ntamx
    # A row written before ntamx hosts were probed has no "ntamx" key: it loads, without them.
    old = RESULT.to_json()
    del old["ntamx"]
    assert DomainResult.from_json(old) == RESULT
    cache = TransportCache(str(tmp_path / "transport.sqlite3"))
    try:
        cache.put(with_ntamx, 1_900_086_400.0)
        got = cache.get("partner.example")
        assert got is not None and got.result.ntamx == (ntamx,)
    finally:
        cache.close()


def test_an_ntamx_host_error_is_cached_as_a_failure() -> None:
    cfg = TransportConfig(cache_ttl_success=100, cache_ttl_failure=10)
    broken = HostResult("ntamx.partner.example", 10, error="no address records")
    assert ttl_for(dataclasses.replace(RESULT, ntamx=(broken,)), cfg) == 10
