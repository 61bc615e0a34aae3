"""The prober against real DNS (NSD + validating Unbound) and real STARTTLS servers.

Each case is a domain in a test zone whose MX hosts are aiosmtpd sinks on 127.0.4.x:25 with
trustme or self-signed certificates; the assertions are what `zivmilter probe` would show.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from tests.harness.cli import zivmilter
from tests.harness.dns import PrivateChain, SelfSigned, TestDns, Zone, shared_dns, tlsa_rdata
from tests.harness.sink import Sink, server_tls_context
from zivmilter.core import config as config_mod
from zivmilter.core.levels import Level, TlsVersion
from zivmilter.transport.cache import TransportCache, db_path
from zivmilter.transport.live import TransportFacts
from zivmilter.transport.model import DomainResult
from zivmilter.transport.probe import Prober

pytestmark = pytest.mark.integration
_ = shared_dns  # the session fixture (imported so pytest finds it), used by `world` below

CA = trustme.CA()
INTERMEDIATE = CA.create_child_ca()  # DANE-TA: servers present it, so a TLSA record can name it
WRONG_KEY = SelfSigned("unrelated.example")


@dataclass
class Server:
    address: str
    cert: Any | None  # trustme LeafCert or SelfSigned; None: no STARTTLS
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED


def _leaf(host: str) -> Any:
    return CA.issue_cert(host)


def _der(cert: Any) -> bytes:
    if isinstance(cert, SelfSigned):
        return cert.cert_der
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


# --- the world: zones and servers ----------------------------------------------------------

SELF_DANE = SelfSigned("mx.dane.example")
SELF_PLAIN = SelfSigned("mx.selfsigned.example")
SELF_MULTI = SelfSigned("mx1.multi.example")
SELF_MULTI3 = SelfSigned("mx3.multi.example")
TA_LEAF = INTERMEDIATE.issue_cert("mx.danta.example")
TA_WRONG_NAME = INTERMEDIATE.issue_cert("other.danta-wrong.example")
INTERMEDIATE_DER = ssl.PEM_cert_to_DER_cert(INTERMEDIATE.cert_pem.bytes().decode())
SELF_PROVIDER = SelfSigned("mx.provider.example")
CN_ONLY = PrivateChain("mx.dantacn.example")  # DANE-TA leaf with a subject CN and no SAN

SERVERS = {
    "mx.dane.example": Server("127.0.4.11", SELF_DANE),
    "mx.danta.example": Server("127.0.4.12", TA_LEAF),
    "mx.pane.example": Server("127.0.4.13", _leaf("mx.pane.example")),
    "mx.pkix.example": Server("127.0.4.14", _leaf("mx.pkix.example")),
    "mx.selfsigned.example": Server("127.0.4.15", SELF_PLAIN),
    "mx.plain.example": Server("127.0.4.16", None),
    "mx.badtlsa.example": Server("127.0.4.17", _leaf("mx.badtlsa.example")),
    "mx.tls11.example": Server(
        "127.0.4.18", _leaf("mx.tls11.example"), ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1
    ),
    "implicit.example": Server("127.0.4.19", _leaf("implicit.example")),
    "mx.danta-wrong.example": Server("127.0.4.20", TA_WRONG_NAME),
    "mx1.multi.example": Server("127.0.4.21", SELF_MULTI),
    "mx2.multi.example": Server("127.0.4.22", _leaf("mx2.multi.example")),
    "mx3.multi.example": Server("127.0.4.23", SELF_MULTI3),
    "mx.bogus.example": Server("127.0.4.24", _leaf("mx.bogus.example")),
    "mx.unsignedhost.example": Server("127.0.4.25", _leaf("mx.unsignedhost.example")),
    "mx.dantacn.example": Server("127.0.4.29", CN_ONLY),
    # CNAME targets of MX hosts (RFC 7672 2.2.3), in the signed zone provider.example.
    "mx.provider.example": Server("127.0.4.26", SELF_PROVIDER),
    "mxta.provider.example": Server("127.0.4.27", INTERMEDIATE.issue_cert("mxta.provider.example")),
    "mxorig.provider.example": Server(
        "127.0.4.28", INTERMEDIATE.issue_cert("mx.cname-fallback.example")
    ),
}


def _a(host: str) -> str:
    return f"{host.split('.')[0]} A {SERVERS[host].address}"


SILENT = "127.0.4.41"

ZONES = [
    Zone(
        "dane.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            _a("mx.dane.example"),
            f"_25._tcp.mx TLSA {tlsa_rdata(SELF_DANE.cert_der, 3, 1, 1)}",
        ],
    ),
    Zone(
        "danta.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            _a("mx.danta.example"),
            f"_25._tcp.mx TLSA {tlsa_rdata(INTERMEDIATE_DER, 2, 0, 1)}",
        ],
    ),
    Zone(
        "danta-wrong.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            _a("mx.danta-wrong.example"),
            f"_25._tcp.mx TLSA {tlsa_rdata(INTERMEDIATE_DER, 2, 0, 1)}",
        ],
    ),
    Zone(
        "dantacn.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            _a("mx.dantacn.example"),
            f"_25._tcp.mx TLSA {tlsa_rdata(CN_ONLY.ca_der, 2, 0, 1)}",
        ],
    ),
    Zone("pane.example", signed=True, records=["@ MX 10 mx", _a("mx.pane.example")]),
    Zone("pkix.example", records=["@ MX 10 mx", _a("mx.pkix.example")]),
    Zone("selfsigned.example", records=["@ MX 10 mx", _a("mx.selfsigned.example")]),
    Zone("plain.example", records=["@ MX 10 mx", _a("mx.plain.example")]),
    Zone(
        "badtlsa.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            _a("mx.badtlsa.example"),
            f"_25._tcp.mx TLSA {tlsa_rdata(WRONG_KEY.cert_der, 3, 1, 1)}",
        ],
    ),
    Zone("tls11.example", records=["@ MX 10 mx", _a("mx.tls11.example")]),
    Zone("implicit.example", records=[f"@ A {SERVERS['implicit.example'].address}"]),
    Zone("nullmx.example", records=["@ MX 0 ."]),
    Zone(
        "multi.example",
        signed=True,
        records=[
            "@ MX 10 mx1",
            "@ MX 20 mx2",
            "@ MX 30 mx3",
            _a("mx1.multi.example"),
            _a("mx2.multi.example"),
            _a("mx3.multi.example"),
            f"_25._tcp.mx1 TLSA {tlsa_rdata(SELF_MULTI.cert_der, 3, 1, 1)}",
        ],
    ),
    Zone(
        "bogus.example",
        signed=True,
        bogus=True,
        records=[
            "@ MX 10 mx",
            _a("mx.bogus.example"),
        ],
    ),
    # A signed zone whose MX host lives in an unsigned zone: MX secure, addresses not.
    Zone("signedmx.example", signed=True, records=["@ MX 10 mx.unsignedhost.example."]),
    Zone("unsignedhost.example", records=[_a("mx.unsignedhost.example")]),
    # MX hosts that are CNAMEs: TLSA records are looked up at the expanded name first, then at
    # the MX name; DANE-TA accepts either name in the certificate. An insecure link anywhere in
    # the chain (alias-unsigned.example) leaves the addresses insecure: no DANE at all.
    Zone(
        "provider.example",
        signed=True,
        records=[
            _a("mx.provider.example"),
            _a("mxta.provider.example"),
            _a("mxorig.provider.example"),
            f"_25._tcp.mx TLSA {tlsa_rdata(SELF_PROVIDER.cert_der, 3, 1, 1)}",
            f"_25._tcp.mxta TLSA {tlsa_rdata(INTERMEDIATE_DER, 2, 0, 1)}",
        ],
    ),
    Zone(
        "cname.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            "mx CNAME mx.provider.example.",
        ],
    ),
    Zone(
        "cname-ta.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            "mx CNAME mxta.provider.example.",
        ],
    ),
    Zone(
        "cname-fallback.example",
        signed=True,
        records=[
            "@ MX 10 mx",
            "mx CNAME mxorig.provider.example.",
            f"_25._tcp.mx TLSA {tlsa_rdata(INTERMEDIATE_DER, 2, 0, 1)}",
        ],
    ),
    Zone(
        "cname-insecure.example",
        signed=True,
        records=[
            "@ MX 10 mx.alias-unsigned.example.",
        ],
    ),
    Zone("alias-unsigned.example", records=["mx CNAME mx.provider.example."]),
    Zone("refused.example", records=["@ MX 10 mx", "mx A 127.0.4.40"]),  # nothing listens
    Zone("silent.example", records=["@ MX 10 mx", f"mx A {SILENT}"]),  # accepts, never greets
    Zone("noaddress.example", records=["@ MX 10 mx"]),
    Zone(
        "nta.example",
        signed=True,
        records=[
            "@ MX 10 mx.pane.example.",
            '@ TXT "v=NTA7516-1;startdate=2020-01;enddate=2099-12;provider=Example Mail;'
            'ntamx=20 mx2.nta.example;ntamx=10 mx1.nta.example"',
        ],
    ),
    # The MX has no STARTTLS; the ntamx hosts are a CA-valid one and a DANE-EE one.
    Zone(
        "ntamx.example",
        signed=True,
        records=[
            "@ MX 10 mx.plain.example.",
            '@ TXT "v=NTA7516-1;startdate=2020-01;enddate=2099-12;provider=Example Mail;'
            'ntamx=20 mx.dane.example;ntamx=10 mx.pkix.example"',
        ],
    ),
    Zone(
        "nta-expired.example",
        signed=True,
        records=[
            "@ MX 10 mx.pane.example.",
            '@ TXT "v=NTA7516-1;startdate=2019-01;enddate=2021-12;provider=Example Mail"',
        ],
    ),
    Zone(
        "nta-unsigned.example",
        records=[
            "@ MX 10 mx.pkix.example.",
            '@ TXT "v=NTA7516-1;startdate=2020-01;enddate=2099-12;provider=Example Mail"',
        ],
    ),
]


@pytest.fixture(scope="module")
def world(
    shared_dns: TestDns, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    shared_dns.set_zones(ZONES)
    tmp = tmp_path_factory.mktemp("transport")
    ca_file = tmp / "ca.pem"
    CA.cert_pem.write_to_path(str(ca_file))
    sinks = []
    try:
        for host, server in SERVERS.items():
            tls = None
            if server.cert is not None:
                tls = server_tls_context(
                    server.cert, minimum=server.minimum, maximum=server.maximum
                )
            sink = Sink(server.address, 25, tls=tls, hostname=host)
            sink.__enter__()
            sinks.append(sink)
        cfg = config_mod.from_mapping(
            {
                "organization": {"domains": ["sender.example"]},
                "store": {"path": str(tmp / "store")},
                "transport": {
                    "resolver": [shared_dns.resolver],
                    "ca_file": str(ca_file),
                    "timeout": 5,
                    "domain_budget": 20,
                },
                "nta7516": {"exclude": ["nta-excluded.example"]},
            }
        )
        yield {"config": cfg, "dns": shared_dns, "tmp": tmp}
    finally:
        for sink in sinks:
            sink.__exit__(None, None, None)


def probe(world: dict[str, Any], domain: str) -> DomainResult:
    return Prober(world["config"].transport).probe(domain)


# --- one level per case ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "level"),
    [
        ("dane.example", Level.DANE),  # DANE-EE 3 1 1 on a self-signed cert: no CA needed
        ("danta.example", Level.DANE),  # DANE-TA 2 0 1 on the presented intermediate
        ("dantacn.example", Level.DANE),  # DANE-TA, leaf names the host in its CN only
        ("pane.example", Level.PANE),  # signed MX + CA cert, no TLSA
        ("pkix.example", Level.PKIX),  # unsigned MX + CA cert
        ("selfsigned.example", Level.TLS),
        ("plain.example", Level.NONE),  # no STARTTLS
        ("tls11.example", Level.NONE),  # TLS 1.1 only
        ("implicit.example", Level.PKIX),  # no MX: the domain's own A record
        ("nullmx.example", Level.NONE),
        ("multi.example", Level.TLS),  # dane + pane + tls hosts: the weakest wins
        ("bogus.example", Level.NONE),  # expired signatures: the validator answers SERVFAIL
        ("signedmx.example", Level.PANE),  # MX signed, host's addresses not: no DANE, PANE fine
        ("nosuchdomain.example", Level.NONE),
        ("cname.example", Level.DANE),  # DANE-EE at the CNAME target of the MX host
        ("cname-ta.example", Level.DANE),  # DANE-TA there; the certificate names the target
        ("cname-fallback.example", Level.DANE),  # no TLSA at the target: the MX name's count
        ("cname-insecure.example", Level.TLS),  # unsigned CNAME: the target's TLSA do not count
    ],
)
def test_level(world: dict[str, Any], domain: str, level: Level) -> None:
    result = probe(world, domain)
    assert result.level is level, (result.reason, [h.to_json() for h in result.mx])


def test_dane_ee_details(world: dict[str, Any]) -> None:
    result = probe(world, "dane.example")
    (host,) = result.mx
    assert host.host == "mx.dane.example" and host.preference == 10
    assert host.addresses == ("127.0.4.11",)
    assert host.starttls and host.tls_version == "TLSv1.3"
    assert not host.pkix_valid and host.pkix_error and "self-signed" in host.pkix_error
    assert host.dnssec.mx and host.dnssec.address and host.dnssec.tlsa
    assert [str(r) for r in host.tlsa] == [tlsa_rdata(SELF_DANE.cert_der, 3, 1, 1)]
    assert host.dane_valid is True and host.error is None
    assert result.tls_version is TlsVersion.TLS1_3


def test_dane_ta_needs_the_right_name(world: dict[str, Any]) -> None:
    result = probe(world, "danta-wrong.example")
    (host,) = result.mx
    # The TLSA record matches the CA, but the leaf names another host.
    assert host.dane_valid is False
    assert result.level is Level.TLS  # PKIX fails on the name too
    assert host.error and "does not verify" in host.error


def test_cname_mx_host_uses_the_targets_tlsa(world: dict[str, Any]) -> None:
    (host,) = probe(world, "cname.example").mx
    assert host.host == "mx.cname.example" and host.addresses == ("127.0.4.26",)
    assert [str(r) for r in host.tlsa] == [tlsa_rdata(SELF_PROVIDER.cert_der, 3, 1, 1)]
    assert host.dane_valid is True and host.dnssec.tlsa
    assert "TLSA at mx.provider.example, the CNAME target of mx.cname.example" in host.reason


def test_insecure_cname_gets_no_dane(world: dict[str, Any]) -> None:
    (host,) = probe(world, "cname-insecure.example").mx
    assert host.dnssec.mx and not host.dnssec.address
    assert host.tlsa == () and host.dane_valid is None


def test_tlsa_that_does_not_match(world: dict[str, Any]) -> None:
    result = probe(world, "badtlsa.example")
    (host,) = result.mx
    assert host.dane_valid is False
    assert host.pkix_valid and host.dnssec.mx and host.dnssec.tlsa
    assert result.level is Level.PANE  # not dane; the CA-valid cert on signed MX still counts
    assert host.error and "no usable TLSA record matches" in host.error


def test_pkix_details(world: dict[str, Any]) -> None:
    result = probe(world, "pkix.example")
    (host,) = result.mx
    assert host.pkix_valid and host.pkix_error is None
    assert not host.dnssec.mx and not host.dnssec.address
    assert host.tlsa == () and host.dane_valid is None


def test_no_starttls(world: dict[str, Any]) -> None:
    (host,) = probe(world, "plain.example").mx
    assert not host.starttls and host.tls_version is None
    assert host.error == "STARTTLS not offered"


def test_tls11_only_is_named(world: dict[str, Any]) -> None:
    result = probe(world, "tls11.example")
    (host,) = result.mx
    assert host.starttls and host.tls_version == "TLSv1.1"
    assert result.tls_version is None
    assert "TLS 1.2 or later is required" in result.reason


def test_null_mx(world: dict[str, Any]) -> None:
    result = probe(world, "nullmx.example")
    assert result.mx == () and "null MX" in result.reason


def test_bogus_is_not_dnssec(world: dict[str, Any]) -> None:
    result = probe(world, "bogus.example")
    assert "SERVFAIL" in result.reason


def test_several_hosts_weakest_wins(world: dict[str, Any]) -> None:
    result = probe(world, "multi.example")
    levels = {h.host: h.level for h in result.mx}
    assert levels == {
        "mx1.multi.example": Level.DANE,
        "mx2.multi.example": Level.PANE,
        "mx3.multi.example": Level.TLS,
    }
    assert [h.preference for h in result.mx] == [10, 20, 30]
    assert "mx3.multi.example" in result.reason


def test_unreachable_host(world: dict[str, Any]) -> None:
    result = probe(world, "refused.example")
    (host,) = result.mx
    assert result.level is Level.NONE and not host.starttls
    assert host.error and "127.0.4.40 port 25" in host.error and "refused" in host.error


def test_host_without_addresses(world: dict[str, Any]) -> None:
    result = probe(world, "noaddress.example")
    assert result.level is Level.NONE
    assert result.mx[0].error == "mx.noaddress.example has no address records"


def test_silent_server_times_out_within_the_step_timeout(world: dict[str, Any]) -> None:
    cfg = world["config"]
    transport = dataclasses.replace(cfg.transport, timeout=1.0, domain_budget=5.0)
    with socket.create_server((SILENT, 25)):  # the kernel accepts; nobody ever speaks
        started = time.monotonic()
        result = Prober(transport).probe("silent.example")
        took = time.monotonic() - started
    assert result.level is Level.NONE
    assert result.mx[0].error and "timed out" in result.mx[0].error
    assert took < 3


def test_budget_bounds_the_whole_probe(world: dict[str, Any]) -> None:
    cfg = world["config"]
    transport = dataclasses.replace(cfg.transport, timeout=5.0, domain_budget=1.0)
    with socket.create_server((SILENT, 25)):
        started = time.monotonic()
        result = Prober(transport).probe("silent.example")
        took = time.monotonic() - started
    assert result.level is Level.NONE and took < 2.5


# --- NTA 7516 ---------------------------------------------------------------------------------


def _facts(world: dict[str, Any]) -> TransportFacts:
    return TransportFacts(world["config"], wait=world["config"].transport.domain_budget)


def test_nta_valid_record(world: dict[str, Any]) -> None:
    with _facts(world) as facts:
        fact = facts.nta7516("nta.example")
    assert fact.compliant, fact.reason
    assert fact.mx == ("mx1.nta.example", "mx2.nta.example")  # lowest preference first
    assert "Example Mail" in fact.reason


def test_ntamx_hosts_are_probed_like_mx_hosts(world: dict[str, Any]) -> None:
    result = probe(world, "ntamx.example")
    assert result.level is Level.NONE  # its MX offers no STARTTLS
    assert [(h.preference, h.host, h.level) for h in result.ntamx] == [
        (10, "mx.pkix.example", Level.PANE),  # CA-valid; the signed NTA record stands for the MX
        (20, "mx.dane.example", Level.DANE),  # its TLSA record matches
    ]
    assert result.ntamx[1].dane_valid is True
    with _facts(world) as facts:
        fact = facts.nta7516("ntamx.example")
    assert fact.compliant and fact.mx == ("mx.pkix.example", "mx.dane.example")
    assert fact.mx_transport is not None
    assert fact.mx_transport.level is Level.PANE  # the weakest ntamx host decides
    assert fact.mx_transport.reason.startswith("weakest of 2 ntamx hosts is mx.pkix.example")


def test_cli_probe_shows_the_ntamx_hosts(world: dict[str, Any]) -> None:
    config_file = world["tmp"] / "cli-ntamx.yaml"
    config_file.write_text(
        json.dumps(
            {
                "organization": {"domains": ["sender.example"]},
                "transport": {
                    "resolver": [world["dns"].resolver],
                    "ca_file": world["config"].transport.ca_file,
                },
            }
        )
    )
    done = _cli("probe", "ntamx.example", "--config", str(config_file), "--json", "--no-cache")
    assert done.returncode == 0, done.stderr
    nta = json.loads(done.stdout)["nta7516"]
    assert nta["compliant"] is True and nta["mx"] == ["mx.pkix.example", "mx.dane.example"]
    assert nta["ntamx_level"] == "pane" and nta["ntamx_tls_version"] in ("tls1.2", "tls1.3")
    assert nta["ntamx_reason"].startswith("weakest of 2 ntamx hosts is mx.pkix.example")
    assert [(h["host"], h["level"]) for h in nta["ntamx"]] == [
        ("mx.pkix.example", "pane"),
        ("mx.dane.example", "dane"),
    ]
    text = _cli("probe", "ntamx.example", "--config", str(config_file), "--no-cache").stdout
    assert "ntamx level: pane" in text
    assert "  ntamx 10 mx.pkix.example [127.0.4.14]: pane" in text
    assert "  ntamx 20 mx.dane.example [127.0.4.11]: dane" in text


def test_nta_expired_record(world: dict[str, Any]) -> None:
    with _facts(world) as facts:
        fact = facts.nta7516("nta-expired.example")
    assert not fact.compliant
    assert "expired after 2021-12-31" in fact.reason


def test_nta_unsigned_record(world: dict[str, Any]) -> None:
    with _facts(world) as facts:
        fact = facts.nta7516("nta-unsigned.example")
    assert not fact.compliant and "not DNSSEC-signed" in fact.reason


def test_nta_none_published(world: dict[str, Any]) -> None:
    with _facts(world) as facts:
        fact = facts.nta7516("pane.example")
    assert not fact.compliant and fact.reason == "no NTA 7516 record"


# --- live facts and the cache -----------------------------------------------------------------


def test_live_facts_miss_is_none_then_cached(world: dict[str, Any]) -> None:
    cfg = world["config"]
    store = dataclasses.replace(cfg.store, path=str(world["tmp"] / "live"))
    cfg = dataclasses.replace(cfg, store=store)
    with TransportFacts(cfg, wait=0.0) as facts:
        first = facts.transport("pane.example")
        assert first.level is Level.NONE and "not probed yet" in first.reason
        deadline = time.monotonic() + 20
        while facts.transport("pane.example").level is Level.NONE:
            assert time.monotonic() < deadline, "the background probe never answered"
            time.sleep(0.05)
        assert facts.transport("pane.example").level is Level.PANE
    # The result went to the SQLite cache: a new instance (a restarted milter) answers at once.
    cache = TransportCache(db_path(cfg))
    try:
        row = cache.get("pane.example")
    finally:
        cache.close()
    assert row is not None and row.result.level is Level.PANE
    with TransportFacts(cfg, wait=0.0) as facts:
        assert facts.transport("pane.example").level is Level.PANE


# --- the CLI ----------------------------------------------------------------------------------


_cli = zivmilter


def test_cli_probe_json(world: dict[str, Any]) -> None:
    config_file = world["tmp"] / "cli.yaml"
    config_file.write_text(
        json.dumps(
            {
                "organization": {"domains": ["sender.example"]},
                "store": {"path": str(world["tmp"] / "cli-store")},
                "transport": {
                    "resolver": [world["dns"].resolver],
                    "ca_file": world["config"].transport.ca_file,
                },
            }
        )
    )
    done = _cli("probe", "multi.example", "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"domain", "level", "reason", "checked_at", "cached", "mx", "nta7516"}
    assert out["level"] == "tls" and out["cached"] is False
    assert set(out["mx"][0]) == {
        "host",
        "preference",
        "addresses",
        "starttls",
        "tls_version",
        "pkix_valid",
        "pkix_error",
        "dnssec",
        "tlsa",
        "dane_valid",
        "error",
        "level",
        "reason",
    }
    assert out["mx"][0]["dnssec"] == {"mx": True, "address": True, "tlsa": True}
    assert [m["host"] for m in out["mx"]] == [
        "mx1.multi.example",
        "mx2.multi.example",
        "mx3.multi.example",
    ]
    # Which MX decided the level, and why: the admin's question.
    assert [m["level"] for m in out["mx"]] == ["dane", "pane", "tls"]
    assert out["reason"].startswith("weakest of 3 MX hosts is mx3.multi.example")
    assert "certificate not CA-valid" in out["mx"][2]["reason"]
    again = json.loads(
        _cli("probe", "multi.example", "--json", "--config", str(config_file)).stdout
    )
    assert again["cached"] is True and again["level"] == "tls"
    assert again["reason"] == out["reason"] and again["mx"] == out["mx"]  # the cache keeps them
    text = _cli("probe", "multi.example", "--config", str(config_file), "--no-cache")
    assert text.returncode == 0 and "multi.example: tls" in text.stdout
    assert "probed now" in text.stdout
