"""Key discovery against real servers: NSD + validating Unbound serving OPENPGPKEY and SMIMEA
in signed, unsigned and bogus-signed zones, and HTTPS Web Key Directories on loopback with
trustme certificates (advanced and direct method, a 404, a server of an untrusted CA).

The keys are made by GnuPG (`gpg --quick-gen-key` in a private GNUPGHOME) and cryptography; every
assertion compares the found bytes with what was published and reads the provenance `explain`
will show.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import logging
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.flags
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.dns import TestDns, Zone, shared_dns
from zivmilter.core.keys import KeyKind, KeySource
from zivmilter.transport.keyfind import OpenpgpkeySource, SmimeaSource, WkdSource
from zivmilter.transport.resolver import Resolver

pytestmark = pytest.mark.integration
_ = shared_dns  # the session fixture, used by `world` below

CA = trustme.CA()
OTHER_CA = trustme.CA()  # a CA the lookups do not trust

ADVANCED_IP, DIRECT_IP, APEX_IP, WRONG_CA_IP = "127.0.7.1", "127.0.7.2", "127.0.7.3", "127.0.7.4"
SILENT_IP = "127.0.7.5"  # takes the connection, never answers


# --- keys, computed here independently of the code under test -------------------------------


def gpg_public_key(uid: str) -> bytes:
    """A fresh OpenPGP certificate (binary, as WKD and OPENPGPKEY publish it) made by GnuPG."""
    with tempfile.TemporaryDirectory(prefix="zivmilter-gpg-") as home:
        env = {**os.environ, "GNUPGHOME": home}
        try:
            subprocess.run(
                ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                 "--quick-gen-key", uid, "ed25519", "default", "1y"],
                env=env, check=True, capture_output=True,
            )  # fmt: skip
            key = subprocess.run(
                ["gpg", "--batch", "--export", uid], env=env, check=True, capture_output=True
            ).stdout
        finally:
            subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False)
    assert key[:1] and key[0] & 0x80, "gpg --export gives a binary certificate"
    return key


def smime_cert(address: str) -> bytes:
    """An S/MIME certificate (DER) for `address`, issued by a throwaway CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test S/MIME CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, address)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def owner(local: str, label: str) -> str:
    """RFC 7929 / 8162 owner name relative to the zone: SHA2-256, 28 octets, hex."""
    return f"{hashlib.sha256(local.encode()).digest()[:28].hex()}.{label}"


def wkd_hash(local: str) -> str:
    """z-base-32 of SHA-1 of the lower-cased local part, written out from the draft."""
    alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"
    bits = "".join(f"{b:08b}" for b in hashlib.sha1(local.lower().encode()).digest())
    return "".join(alphabet[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


ALICE_PGP = gpg_public_key("Alice <alice@keys.example>")
JOE_PGP = gpg_public_key("Joe <joe@direct.example>")
APEX_PGP = gpg_public_key("Dave <dave@keys.example>")
WRONG_CA_PGP = gpg_public_key("Eve <eve@wrongca.example>")
ALICE_SMIME = smime_cert("alice@keys.example")
CA_SMIME = smime_cert("ca@keys.example")
PKIX_SMIME = smime_cert("pkix@keys.example")


def _openpgpkey(local: str, key: bytes) -> str:
    return f"{owner(local, '_openpgpkey')} OPENPGPKEY {base64.b64encode(key).decode()}"


def _smimea(local: str, usage: int, selector: int, mtype: int, der: bytes) -> str:
    data = der if mtype == 0 else hashlib.sha256(der).digest()
    return f"{owner(local, '_smimecert')} SMIMEA {usage} {selector} {mtype} {data.hex()}"


ZONES = [
    Zone("keys.example", signed=True, records=[
        f"@ A {APEX_IP}",
        f"openpgpkey A {ADVANCED_IP}",
        _openpgpkey("alice", ALICE_PGP),
        _smimea("alice", 3, 0, 0, ALICE_SMIME),
        _smimea("alice", 3, 0, 1, ALICE_SMIME),  # a hash only: skipped
        _smimea("carol", 3, 0, 1, ALICE_SMIME),  # nothing but a hash
        _smimea("ca", 2, 0, 0, CA_SMIME),  # names a CA (DANE-TA): not a recipient's certificate
        _smimea("pkix", 1, 0, 0, PKIX_SMIME),  # PKIX-EE: must still chain to a trusted CA
    ]),
    Zone("unsigned.example", records=[
        _openpgpkey("alice", ALICE_PGP),
        _smimea("alice", 3, 0, 0, ALICE_SMIME),
    ]),
    Zone("bogus.example", signed=True, bogus=True, records=[
        _openpgpkey("alice", ALICE_PGP),
        _smimea("alice", 3, 0, 0, ALICE_SMIME),
    ]),
    Zone("direct.example", records=[f"@ A {DIRECT_IP}"]),
    Zone("wrongca.example", records=[f"openpgpkey A {WRONG_CA_IP}"]),
    Zone("silent.example", records=[f"openpgpkey A {SILENT_IP}"]),
]  # fmt: skip


# --- Web Key Directories on loopback --------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        files: Mapping[str, bytes] = self.server.files  # type: ignore[attr-defined]
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        body = files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WkdServer:
    """An HTTPS server on ADDRESS:443 serving `files` (request path with query -> bytes)."""

    def __init__(self, address: str, ca: trustme.CA, names: list[str], files: dict[str, bytes]):
        self.address = address
        self.httpd = http.server.ThreadingHTTPServer((address, 443), _Handler)
        self.httpd.files = files  # type: ignore[attr-defined]
        self.httpd.requests = self.requests = []  # type: ignore[attr-defined]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _advanced(domain: str, local: str) -> str:
    return f"/.well-known/openpgpkey/{domain}/hu/{wkd_hash(local)}?l={local}"


def _direct(local: str) -> str:
    return f"/.well-known/openpgpkey/hu/{wkd_hash(local)}?l={local}"


SERVERS: dict[str, WkdServer] = {}


@pytest.fixture(scope="module")
def world(shared_dns: TestDns) -> Iterator[TestDns]:
    shared_dns.set_zones(ZONES)
    servers = [
        WkdServer(ADVANCED_IP, CA, ["openpgpkey.keys.example"], {
            _advanced("keys.example", "alice"): ALICE_PGP,
        }),
        # The apex of keys.example also serves a key by the direct method: it must never be
        # asked, since keys.example has the openpgpkey sub-domain.
        WkdServer(APEX_IP, CA, ["keys.example"], {_direct("dave"): APEX_PGP}),
        WkdServer(DIRECT_IP, CA, ["direct.example"], {
            _direct("joe"): JOE_PGP,
            _direct("soft404"): b"<!doctype html><title>Not found</title>",
        }),
        WkdServer(WRONG_CA_IP, OTHER_CA, ["openpgpkey.wrongca.example"], {
            _advanced("wrongca.example", "eve"): WRONG_CA_PGP,
        }),
    ]  # fmt: skip
    SERVERS.update((s.address, s) for s in servers)
    silent = socket.create_server((SILENT_IP, 443), backlog=16)
    try:
        yield shared_dns
    finally:
        silent.close()
        SERVERS.clear()
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    CA.cert_pem.write_to_path(str(path))
    return str(path)


def _wkd(world: TestDns, ca_file: str) -> WkdSource:
    return WkdSource(Resolver((world.resolver,)), ca_file=ca_file, timeout=10)


# --- WKD --------------------------------------------------------------------------------------


def test_wkd_advanced_method(world: TestDns, ca_file: str) -> None:
    (found,) = _wkd(world, ca_file).candidates("alice@keys.example")
    assert found.kind is KeyKind.OPENPGP and found.source is KeySource.WKD
    assert found.material == ALICE_PGP
    url = f"https://openpgpkey.keys.example{_advanced('keys.example', 'alice')}"
    assert found.provenance == f"WKD advanced method, {url} (PKIX)"


def test_wkd_direct_method_when_the_subdomain_has_no_address(world: TestDns, ca_file: str) -> None:
    (found,) = _wkd(world, ca_file).candidates("joe@direct.example")
    assert found.material == JOE_PGP
    url = f"https://direct.example{_direct('joe')}"
    assert found.provenance == f"WKD direct method, {url} (PKIX)"


def test_wkd_404_finds_nothing(world: TestDns, ca_file: str) -> None:
    assert list(_wkd(world, ca_file).candidates("nobody@direct.example")) == []
    assert list(_wkd(world, ca_file).candidates("nobody@keys.example")) == []
    # A web site's HTML page for any path is no key either.
    assert _wkd(world, ca_file).find("soft404@direct.example").candidates == ()
    assert SERVERS[DIRECT_IP].requests[-1] == _direct("soft404")


def test_wkd_never_falls_back_to_the_apex_when_the_subdomain_exists(
    world: TestDns, ca_file: str
) -> None:
    # The apex serves dave's key by the direct method, but keys.example delegates to
    # openpgpkey.keys.example, which has none: nothing is found.
    assert list(_wkd(world, ca_file).candidates("dave@keys.example")) == []
    assert SERVERS[ADVANCED_IP].requests[-1] == _advanced("keys.example", "dave")
    assert SERVERS[APEX_IP].requests == []
    # ... though the apex does serve the key, had it been asked.
    ctx = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection((APEX_IP, 443), 5) as raw,
        ctx.wrap_socket(raw, server_hostname="keys.example") as tls,
    ):
        tls.sendall(f"GET {_direct('dave')} HTTP/1.0\r\nHost: keys.example\r\n\r\n".encode())
        reply = b"".join(iter(lambda: tls.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(APEX_PGP)


def test_wkd_server_of_an_untrusted_ca_is_refused(
    world: TestDns, ca_file: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="zivmilter.transport"):
        assert list(_wkd(world, ca_file).candidates("eve@wrongca.example")) == []
    assert "certificate not trusted" in caplog.text
    # The same server, its CA trusted: the key is there, so the refusal above was the CA's.
    other = tmp_path / "other.pem"
    OTHER_CA.cert_pem.write_to_path(str(other))
    (found,) = _wkd(world, str(other)).candidates("eve@wrongca.example")
    assert found.material == WRONG_CA_PGP


def test_wkd_response_over_the_size_bound_is_refused(world: TestDns, ca_file: str) -> None:
    source = WkdSource(Resolver((world.resolver,)), ca_file=ca_file, max_bytes=len(ALICE_PGP) - 1)
    assert list(source.candidates("alice@keys.example")) == []


def test_wkd_lookup_is_bounded_in_time(world: TestDns, ca_file: str) -> None:
    # TCP is accepted (the kernel's backlog) but TLS never answers: the lookup gives up at its
    # budget and finds nothing, an outcome the cache keeps only briefly (not conclusive).
    source = WkdSource(Resolver((world.resolver,)), ca_file=ca_file, timeout=1.5)
    start = time.monotonic()
    found = source.find("joe@silent.example")
    assert found.candidates == () and not found.conclusive
    assert time.monotonic() - start < 30  # 1.5 s in fact; generous for a loaded machine


# --- OPENPGPKEY and SMIMEA --------------------------------------------------------------------


def test_openpgpkey_from_a_signed_zone(world: TestDns) -> None:
    (found,) = OpenpgpkeySource(Resolver((world.resolver,))).candidates("alice@keys.example")
    assert found.kind is KeyKind.OPENPGP and found.source is KeySource.OPENPGPKEY
    assert found.material == ALICE_PGP
    name = f"{owner('alice', '_openpgpkey')}.keys.example"
    assert found.provenance == f"OPENPGPKEY at {name} (DNSSEC-validated)"


def test_smimea_full_certificate_from_a_signed_zone(
    world: TestDns, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="zivmilter.transport"):
        (found,) = SmimeaSource(Resolver((world.resolver,))).candidates("alice@keys.example")
    assert found.kind is KeyKind.SMIME and found.source is KeySource.SMIMEA
    assert found.material == ALICE_SMIME
    name = f"{owner('alice', '_smimecert')}.keys.example"
    assert found.provenance == f"SMIMEA DANE-EE(3) at {name} (DNSSEC-validated)"
    assert not found.needs_ca_chain  # DNSSEC alone vouches for a DANE-EE certificate
    assert "DANE-EE(3) 0 1 skipped: holds no whole certificate" in caplog.text


def test_smimea_pkix_ee_certificate_must_still_chain(world: TestDns) -> None:
    (found,) = SmimeaSource(Resolver((world.resolver,))).candidates("pkix@keys.example")
    assert found.material == PKIX_SMIME and found.needs_ca_chain
    name = f"{owner('pkix', '_smimecert')}.keys.example"
    assert found.provenance == f"SMIMEA PKIX-EE(1) at {name} (DNSSEC-validated)"


def test_smimea_hashes_and_ca_records_give_no_candidate(
    world: TestDns, caplog: pytest.LogCaptureFixture
) -> None:
    source = SmimeaSource(Resolver((world.resolver,)))
    with caplog.at_level(logging.INFO, logger="zivmilter.transport"):
        assert list(source.candidates("carol@keys.example")) == []
        assert list(source.candidates("ca@keys.example")) == []
    assert "names a CA, not the recipient's certificate" in caplog.text


@pytest.mark.parametrize("source_class", [OpenpgpkeySource, SmimeaSource])
def test_unsigned_zone_is_ignored(
    world: TestDns, source_class: type[OpenpgpkeySource], caplog: pytest.LogCaptureFixture
) -> None:
    # The records are there, only not validated: the resolver answers them without AD.
    rdtype = source_class.rdtype
    label = source_class.label
    reply = world.query(f"{owner('alice', label)}.unsigned.example", rdtype)
    assert reply.answer and not reply.flags & dns.flags.AD
    with caplog.at_level(logging.INFO, logger="zivmilter.transport"):
        found = source_class(Resolver((world.resolver,))).candidates("alice@unsigned.example")
    assert list(found) == []
    assert "not DNSSEC-validated" in caplog.text


@pytest.mark.parametrize("source_class", [OpenpgpkeySource, SmimeaSource])
def test_bogus_zone_is_ignored(
    world: TestDns, source_class: type[OpenpgpkeySource], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="zivmilter.transport"):
        found = source_class(Resolver((world.resolver,))).candidates("alice@bogus.example")
    assert list(found) == []
    assert "SERVFAIL" in caplog.text
