"""NTA 7516 declarations (SPEC 4a): parsing, the validity window, signing and the admin's lists."""

from __future__ import annotations

from datetime import date

import pytest

from zivmilter.core.config import Nta7516Config
from zivmilter.core.facts import TransportFact
from zivmilter.core.levels import Level, TlsVersion
from zivmilter.transport import nta7516
from zivmilter.transport.model import NtaLookup

GOOD = "v=NTA7516-1;startdate=2024-02;enddate=2026-11;provider=Example Mail"


def test_parse_good_record() -> None:
    record = nta7516.parse(GOOD + ";ntamx=20 mx2.example.org;ntamx=10 MX1.Example.org.")
    assert isinstance(record, nta7516.NtaRecord)
    assert record.start == date(2024, 2, 1)
    assert record.end == date(2026, 11, 30)  # last day of the end month
    assert record.provider == "Example Mail"
    assert record.mx == ("mx1.example.org", "mx2.example.org")  # lowest preference first


def test_parse_tolerates_spaces_case_trailing_semicolon_and_unknown_tags() -> None:
    record = nta7516.parse(
        " v=nta7516-1 ; StartDate=2024-02; enddate=2024-02 ;provider=X; future=1;"
    )
    assert isinstance(record, nta7516.NtaRecord)
    assert record.end == date(2024, 2, 29)  # leap year


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("startdate=2024-01;v=NTA7516-1;enddate=2025-01;provider=X", "must start with v="),
        ("v=NTA7516-2;startdate=2024-01;enddate=2025-01;provider=X", "unsupported version"),
        ("v=NTA7516-1;enddate=2025-01;provider=X", "startdate is missing"),
        ("v=NTA7516-1;startdate=2024-01;provider=X", "enddate is missing"),
        ("v=NTA7516-1;startdate=2024-01;enddate=2025-01", "provider is missing"),
        ("v=NTA7516-1;startdate=2024-13;enddate=2025-01;provider=X", "not YYYY-MM"),
        ("v=NTA7516-1;startdate=2024-1;enddate=2025-01;provider=X", "not YYYY-MM"),
        ("v=NTA7516-1;startdate=2024-01;enddate=25-01;provider=X", "not YYYY-MM"),
        ("v=NTA7516-1;startdate=2025-02;enddate=2025-01;provider=X", "before startdate"),
        ("v=NTA7516-1;startdate=2024-01;startdate=2024-02;enddate=2025-01;provider=X", "more than"),
        ("v=NTA7516-1;startdate=2024-01;enddate=2025-01;provider=X;ntamx=mx.example", "preference"),
        ("v=NTA7516-1;startdate=2024-01;enddate=2025-01;provider=X;ntamx=10 *.x.org", "host name"),
        ("v=NTA7516-1;startdate;enddate=2025-01;provider=X", "not a tag=value"),
    ],
)
def test_parse_malformed(text: str, problem: str) -> None:
    result = nta7516.parse(text)
    assert isinstance(result, str) and problem in result


def test_candidates() -> None:
    assert nta7516.is_candidate("v=NTA7516-1;...")
    assert nta7516.is_candidate("V=nta7516-2")
    assert not nta7516.is_candidate("v=spf1 -all")


@pytest.mark.parametrize(
    ("lookup", "reason"),
    [
        (NtaLookup((), True), "no NTA 7516 record"),
        (NtaLookup((GOOD,), False), "not DNSSEC-signed"),
        (NtaLookup((GOOD, GOOD), True), "2 NTA 7516 records"),
        (NtaLookup((GOOD.replace("2024-02", "2024-2"),), True), "malformed NTA 7516 record"),
        (NtaLookup(error="SERVFAIL"), "lookup failed: SERVFAIL"),
    ],
)
def test_interpret_refusals(lookup: NtaLookup, reason: str) -> None:
    found = nta7516.interpret(lookup)
    assert isinstance(found, str) and reason in found
    assert not nta7516.judge(found, date(2025, 1, 1)).compliant


@pytest.mark.parametrize(
    ("today", "compliant"),
    [
        (date(2024, 1, 31), False),  # the day before startdate's first day
        (date(2024, 2, 1), True),
        (date(2026, 11, 30), True),  # the last day of enddate
        (date(2026, 12, 1), False),
    ],
)
def test_validity_window(today: date, compliant: bool) -> None:
    found = nta7516.interpret(NtaLookup((GOOD,), True))
    fact = nta7516.judge(found, today)
    assert fact.compliant is compliant, fact.reason


def test_expired_and_future_reasons() -> None:
    found = nta7516.interpret(NtaLookup((GOOD,), True))
    assert "expired after 2026-11-30" in nta7516.judge(found, date(2027, 1, 1)).reason
    assert "valid only from 2024-02-01" in nta7516.judge(found, date(2023, 1, 1)).reason


def test_config_lists() -> None:
    cfg = Nta7516Config(domains=("listed.example",), exclude=("excluded.example",))
    signed = nta7516.interpret(NtaLookup((GOOD,), True))
    today = date(2025, 6, 1)
    assert nta7516.evaluate("listed.example", "no NTA 7516 record", cfg, today).compliant
    excluded = nta7516.evaluate("excluded.example", signed, cfg, today)
    assert not excluded.compliant and "nta7516.exclude" in excluded.reason
    assert nta7516.evaluate("other.example", signed, cfg, today).compliant


def test_parse_keeps_ntamx_preferences_and_drops_repeated_hosts() -> None:
    record = nta7516.parse(
        GOOD + ";ntamx=30 b.example.org;ntamx=5 a.example.org;ntamx=40 A.example.org"
    )
    assert isinstance(record, nta7516.NtaRecord)
    assert record.ntamx == [(5, "a.example.org"), (30, "b.example.org")]


def test_parse_refuses_an_ntamx_host_that_cannot_be_a_next_hop() -> None:
    # A valid domain name, but not one the Postfix route tables accept as a host.
    result = nta7516.parse(GOOD + ";ntamx=10 mx.example.1x")
    assert isinstance(result, str) and "not a host name" in result


def test_judge_carries_what_the_ntamx_hosts_meet() -> None:
    probed = TransportFact(Level.PKIX, TlsVersion.TLS1_2, "ntamx says pkix")
    record = nta7516.parse(GOOD + ";ntamx=10 mx.example.org")
    fact = nta7516.judge(record, date(2025, 1, 1), probed)
    assert fact.compliant and fact.mx == ("mx.example.org",) and fact.mx_transport == probed
    unprobed = nta7516.judge(record, date(2025, 1, 1))
    assert unprobed.compliant and unprobed.mx_transport is None
    # Without ntamx hosts in the record there is nothing for the probed level to describe.
    plain = nta7516.judge(nta7516.parse(GOOD), date(2025, 1, 1), probed)
    assert plain.mx == () and plain.mx_transport is None
