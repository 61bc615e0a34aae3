"""TLSA matching (RFC 7672) on real certificates made in memory: DANE-EE, DANE-TA, unusable."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest
import trustme

from tests.harness.dns import PrivateChain, SelfSigned, tlsa_rdata
from zivmilter.transport import dane
from zivmilter.transport.model import TlsaRecord

NOW = datetime.now(UTC)
HOST = "mx.partner.example"
CA = trustme.CA()
INTERMEDIATE = CA.create_child_ca()


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def _chain(leaf: trustme.LeafCert) -> list[bytes]:
    return [_der(b.bytes()) for b in leaf.cert_chain_pems]


LEAF = INTERMEDIATE.issue_cert(HOST)
CHAIN = _chain(LEAF)  # leaf, intermediate (what a server presents)
ROOT = _der(CA.cert_pem.bytes())
SELF = SelfSigned("somewhere-else.example", expired=True)


def rec(text: str) -> TlsaRecord:
    return TlsaRecord.parse(text)


@pytest.mark.parametrize(("selector", "mtype"), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)])
def test_dane_ee_matches_every_selector_and_matching_type(selector: int, mtype: int) -> None:
    record = rec(tlsa_rdata(CHAIN[0], 3, selector, mtype))
    assert dane.check([record], CHAIN, HOST, NOW).valid


def test_dane_ee_ignores_name_and_expiry() -> None:
    record = rec(tlsa_rdata(SELF.cert_der, 3, 1, 1))
    outcome = dane.check([record], [SELF.cert_der], HOST, NOW)
    assert outcome.valid, outcome.reason


def test_dane_ee_matches_only_the_leaf() -> None:
    record = rec(tlsa_rdata(CHAIN[1], 3, 1, 1))  # the intermediate, with usage 3
    assert not dane.check([record], CHAIN, HOST, NOW).valid


def test_dane_ee_other_key_does_not_match() -> None:
    record = rec(tlsa_rdata(SELF.cert_der, 3, 1, 1))
    outcome = dane.check([record], CHAIN, HOST, NOW)
    assert not outcome.valid
    assert "no usable TLSA record matches" in outcome.reason


@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (0, 2), (1, 0)])
def test_dane_ta_on_the_presented_intermediate(selector: int, mtype: int) -> None:
    record = rec(tlsa_rdata(CHAIN[1], 2, selector, mtype))
    outcome = dane.check([record], CHAIN, HOST, NOW)
    assert outcome.valid, outcome.reason


def test_dane_ta_checks_the_name() -> None:
    record = rec(tlsa_rdata(CHAIN[1], 2, 0, 1))
    outcome = dane.check([record], CHAIN, "mx2.partner.example", NOW)
    assert not outcome.valid and "does not verify" in outcome.reason


def test_dane_ta_accepts_the_cname_expansion_of_the_mx_name() -> None:
    # MX host mx.alias.example is a CNAME for HOST, the only name in the certificate.
    record = rec(tlsa_rdata(CHAIN[1], 2, 0, 1))
    assert not dane.check([record], CHAIN, "mx.alias.example", NOW).valid
    outcome = dane.check([record], CHAIN, "mx.alias.example", NOW, other_names=(HOST,))
    assert outcome.valid, outcome.reason
    # ...and the other way round: the certificate may name the original MX host.
    outcome = dane.check([record], CHAIN, HOST, NOW, other_names=("mx.target.example",))
    assert outcome.valid, outcome.reason


@pytest.mark.parametrize(
    ("cn", "host", "valid"),
    [
        ("mx.partner.example", "mx.partner.example", True),
        ("MX.Partner.Example", "mx.partner.example", True),
        ("*.partner.example", "mx.partner.example", True),
        ("*.partner.example", "a.mx.partner.example", False),  # one label only
        ("*.example", "partner.example", False),
        ("mx.partner.example", "mx2.partner.example", False),
    ],
)
def test_dane_ta_leaf_without_san_is_checked_by_its_cn(cn: str, host: str, valid: bool) -> None:
    c = PrivateChain(cn)
    outcome = dane.check([rec(tlsa_rdata(c.ca_der, 2, 0, 1))], [c.leaf_der, c.ca_der], host, NOW)
    assert outcome.valid is valid, outcome.reason


def test_dane_ta_cn_only_leaf_still_needs_a_valid_chain() -> None:
    expired = PrivateChain(HOST, days=-1)
    record = rec(tlsa_rdata(expired.ca_der, 2, 0, 1))
    assert not dane.check([record], [expired.leaf_der, expired.ca_der], HOST, NOW).valid
    one, other = PrivateChain(HOST), PrivateChain(HOST)  # other's leaf, one's CA: no chain
    record = rec(tlsa_rdata(one.ca_der, 2, 0, 1))
    assert not dane.check([record], [other.leaf_der, one.ca_der], HOST, NOW).valid


def test_dane_ta_with_a_san_ignores_the_cn() -> None:
    c = PrivateChain(HOST, san=["other.partner.example"])
    outcome = dane.check([rec(tlsa_rdata(c.ca_der, 2, 0, 1))], [c.leaf_der, c.ca_der], HOST, NOW)
    assert not outcome.valid and "does not verify" in outcome.reason


def test_dane_ta_checks_expiry() -> None:
    expired = INTERMEDIATE.issue_cert(
        HOST, not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)
    )
    chain = _chain(expired)
    record = rec(tlsa_rdata(chain[1], 2, 0, 1))
    assert not dane.check([record], chain, HOST, NOW).valid


def test_dane_ta_must_be_presented() -> None:
    # The root signed the intermediate, but the server does not send it: RFC 7672 3.1.2.
    record = rec(tlsa_rdata(ROOT, 2, 0, 1))
    assert not dane.check([record], CHAIN, HOST, NOW).valid
    assert dane.check([record], [*CHAIN, ROOT], HOST, NOW).valid


def test_dane_ta_does_not_accept_the_leaf_itself() -> None:
    record = rec(tlsa_rdata(CHAIN[0], 2, 0, 1))
    assert not dane.check([record], CHAIN, HOST, NOW).valid


def test_dane_ta_from_another_ca_fails() -> None:
    other = trustme.CA().create_child_ca()
    record = rec(tlsa_rdata(_der(other.cert_pem.bytes()), 2, 0, 1))
    assert not dane.check([record], CHAIN, HOST, NOW).valid


@pytest.mark.parametrize("usage", [0, 1])
def test_pkix_usages_are_unusable_for_smtp(usage: int) -> None:
    record = rec(tlsa_rdata(CHAIN[0], usage, 0, 1))
    assert not dane.usable(record)
    outcome = dane.check([record], CHAIN, HOST, NOW)
    assert not outcome.valid and "no usable TLSA records" in outcome.reason


def test_unknown_parameters_are_unusable() -> None:
    assert not dane.usable(TlsaRecord(3, 2, 1, b"\x00" * 32))
    assert not dane.usable(TlsaRecord(3, 1, 3, b"\x00" * 32))
    assert not dane.usable(TlsaRecord(4, 1, 1, b"\x00" * 32))


def test_one_matching_record_among_others_is_enough() -> None:
    records = [
        rec(tlsa_rdata(SELF.cert_der, 3, 1, 1)),
        rec(tlsa_rdata(CHAIN[0], 1, 0, 1)),
        rec(tlsa_rdata(CHAIN[0], 3, 1, 1)),
    ]
    assert dane.check(records, CHAIN, HOST, NOW).valid


def test_no_records_and_no_chain() -> None:
    assert dane.check([], CHAIN, HOST, NOW).reason == "no TLSA records"
    record = rec(tlsa_rdata(CHAIN[0], 3, 1, 1))
    assert not dane.check([record], [], HOST, NOW).valid


def test_garbage_certificate_matches_nothing() -> None:
    record = TlsaRecord(3, 1, 1, b"\x00" * 32)
    assert not dane.check([record], [b"not a certificate"], HOST, NOW).valid


def test_record_text_round_trip() -> None:
    text = tlsa_rdata(CHAIN[0], 3, 1, 1)
    assert str(rec(text)) == text
    with pytest.raises(ValueError):
        TlsaRecord.parse("3 1 x abcd")
