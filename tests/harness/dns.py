"""Real DNS for integration tests: NSD serves test zones, Unbound validates them.

NSD (authoritative) listens on 127.0.0.2:53; Unbound (validating resolver) on 127.0.0.53:53 with
one stub-zone per test zone, a trust anchor per signed zone and no anchor (domain-insecure) for the
others. Zones are signed at start with ldns-keygen/ldns-signzone; a `bogus` zone gets signatures
that expired days ago (beyond the validator's clock skew), so Unbound answers SERVFAIL for it.
Inside scripts/sandbox (a private mount namespace) /etc/resolv.conf is bind-mounted to point at
Unbound, so everything that uses the system resolver (dnspython, Postfix) sees the test zones.

    zone = Zone("partner.example", signed=True, records=["@ MX 10 mx1", "mx1 A 127.0.0.11"])
    with TestDns([zone]) as dns:
        ...

`shared_dns` below is a session-scoped pytest fixture (started without zones; call `set_zones`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dns.exception
import dns.flags
import dns.message
import dns.query
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.harness.sandbox import bind_mounted, in_sandbox

AUTH_ADDRESS = "127.0.0.2"
RESOLVER_ADDRESS = "127.0.0.53"
_TTL = 60


@dataclass(frozen=True)
class Zone:
    """A test zone: `records` are zone-file lines relative to the zone's origin."""

    name: str
    records: Sequence[str] = field(default_factory=tuple)
    signed: bool = False
    bogus: bool = False  # signed, but every signature expired 3 days ago: Unbound answers SERVFAIL

    @property
    def origin(self) -> str:
        return self.name.rstrip(".") + "."


def tlsa_rdata(cert_der: bytes, usage: int = 3, selector: int = 1, mtype: int = 1) -> str:
    """TLSA record data for a certificate, computed here independently of the code under test."""
    cert = x509.load_der_x509_certificate(cert_der)
    if selector == 0:
        data = cert_der
    else:
        data = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return f"{usage} {selector} {mtype} {data.hex()}"


class _ServerIdentity:
    """Certificate chain and key as one PEM, served the way trustme's `configure_cert(ctx)`
    does, so that `server_tls_context` of the sink takes it too."""

    _pem: bytes

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        with tempfile.NamedTemporaryFile(suffix=".pem") as fh:
            fh.write(self._pem)
            fh.flush()
            ctx.load_cert_chain(fh.name)


class SelfSigned(_ServerIdentity):
    """A self-signed server certificate (DANE-EE and "tls only" cases); trustme makes CA ones.

    Offers trustme's `configure_cert(ctx)`, so `server_tls_context` of the sink takes it too.
    """

    def __init__(self, hostname: str, *, expired: bool = False) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
        now = datetime.now(UTC) - timedelta(days=60 if expired else 0)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self._pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


class PrivateChain(_ServerIdentity):
    """A leaf signed by a private CA of its own, subject CN=`cn`, with a DNS SAN only if given.

    For DANE-TA(2) cases trustme cannot make (its leaves always carry a SAN); the server presents
    leaf + CA, so a TLSA record can name the CA. Offers `configure_cert(ctx)` like SelfSigned.
    """

    def __init__(self, cn: str, *, san: Sequence[str] | None = None, days: int = 30) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Private Mail CA")])
        now = datetime.now(UTC)

        def base(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=2))
                .not_valid_after(now + timedelta(days=days))
            )

        ca = (
            base(ca_name, ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        builder = (
            base(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), leaf_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if san is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False
            )
        leaf = builder.sign(ca_key, hashes.SHA256())
        self.ca_der = ca.public_bytes(serialization.Encoding.DER)
        self.leaf_der = leaf.public_bytes(serialization.Encoding.DER)
        self._pem = (
            leaf.public_bytes(serialization.Encoding.PEM)
            + ca.public_bytes(serialization.Encoding.PEM)
            + leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _tool(name: str) -> str:
    found = shutil.which(name) or f"/usr/sbin/{name}"
    return found


class TestDns:
    """NSD + Unbound on loopback, serving `zones`; a context manager."""

    __test__ = False  # not a pytest test class, whatever module imports it

    def __init__(
        self,
        zones: Sequence[Zone] = (),
        *,
        auth_address: str = AUTH_ADDRESS,
        resolver_address: str = RESOLVER_ADDRESS,
        mount_resolv_conf: bool = True,
    ) -> None:
        self.zones = list(zones)
        self.auth_address = auth_address
        self.resolver_address = resolver_address
        self.mount_resolv_conf = mount_resolv_conf
        self.workdir = ""
        self._nsd: subprocess.Popen[bytes] | None = None
        self._unbound: subprocess.Popen[bytes] | None = None
        self._mounts = contextlib.ExitStack()

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> TestDns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def resolver(self) -> str:
        """The value for `transport.resolver` (Unbound's address)."""
        return self.resolver_address

    def start(self) -> TestDns:
        if not in_sandbox():
            raise RuntimeError("TestDns binds port 53 and mounts resolv.conf: use scripts/sandbox")
        for tool in ("nsd", "unbound", "ldns-keygen", "ldns-signzone"):
            if not os.path.exists(_tool(tool)):
                raise RuntimeError(f"{tool} missing: apt-get install nsd unbound ldnsutils")
        self.workdir = tempfile.mkdtemp(prefix="zivmilter-dns-")
        try:
            self._launch()
            if self.mount_resolv_conf:
                self._mount()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._mounts.close()
        self._halt()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = ""

    def set_zones(self, zones: Sequence[Zone]) -> None:
        """Serve another set of zones: both daemons restart, so Unbound's cache starts empty."""
        self._halt()
        self.zones = list(zones)
        self._launch()

    def log(self) -> str:
        """Both daemons' logs, for a failing test's message."""
        out = []
        for name in ("nsd.log", "unbound.log"):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    out.append(f"--- {name}\n{fh.read()[-4000:]}")
        return "\n".join(out)

    # --- internals ---------------------------------------------------------------------------

    def _launch(self) -> None:
        zone_dir = os.path.join(self.workdir, "zones")
        shutil.rmtree(zone_dir, ignore_errors=True)
        os.makedirs(zone_dir)
        anchors = [self._write_zone(zone, zone_dir) for zone in self.zones]
        nsd_conf = self._nsd_conf(zone_dir)
        unbound_conf = self._unbound_conf([a for a in anchors if a])
        self._nsd = subprocess.Popen(
            [_tool("nsd"), "-d", "-c", nsd_conf],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.workdir, "nsd.stderr"), "wb"),  # noqa: SIM115
        )
        self._unbound = subprocess.Popen(
            [_tool("unbound"), "-d", "-c", unbound_conf],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.workdir, "unbound.stderr"), "wb"),  # noqa: SIM115
        )
        self._wait_ready()

    def _halt(self) -> None:
        for proc in (self._unbound, self._nsd):
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._nsd = self._unbound = None

    def _write_zone(self, zone: Zone, zone_dir: str) -> str | None:
        """Write (and sign) one zone file; returns Unbound's trust anchor for a signed zone."""
        origin = zone.origin
        lines = [
            f"$ORIGIN {origin}",
            f"$TTL {_TTL}",
            f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 {_TTL}",
            f"@ IN NS ns.{origin}",
            f"ns IN A {self.auth_address}",
            *zone.records,
        ]
        path = os.path.join(zone_dir, f"{zone.name}.zone")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        if not zone.signed:
            return None
        key = subprocess.run(
            [_tool("ldns-keygen"), "-a", "ECDSAP256SHA256", "-k", origin],
            cwd=zone_dir,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        now = datetime.now(UTC)
        if zone.bogus:
            inception, expiration = now - timedelta(days=10), now - timedelta(days=3)
        else:
            inception, expiration = now - timedelta(days=1), now + timedelta(days=30)
        subprocess.run(
            [
                _tool("ldns-signzone"),
                "-i",
                inception.strftime("%Y%m%d%H%M%S"),
                "-e",
                expiration.strftime("%Y%m%d%H%M%S"),
                "-f",
                f"{path}.signed",
                "-o",
                origin,
                path,
                key,
            ],
            cwd=zone_dir,
            check=True,
            capture_output=True,
            text=True,
        )
        os.replace(f"{path}.signed", path)
        with open(os.path.join(zone_dir, f"{key}.ds"), encoding="utf-8") as fh:
            return " ".join(fh.read().split())

    def _nsd_conf(self, zone_dir: str) -> str:
        w = self.workdir
        out = [
            "server:",
            f"  ip-address: {self.auth_address}",
            "  port: 53",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{zone_dir}"',
            f'  pidfile: "{w}/nsd.pid"',
            f'  zonelistfile: "{w}/zone.list"',
            f'  xfrdfile: "{w}/xfrd.state"',
            f'  xfrdir: "{w}"',
            f'  logfile: "{w}/nsd.log"',
            "  server-count: 1",
            "  verbosity: 1",
            "remote-control:",
            "  control-enable: no",
        ]
        for zone in self.zones:
            out += ["zone:", f"  name: {zone.name}", f'  zonefile: "{zone.name}.zone"']
        path = os.path.join(w, "nsd.conf")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")
        return path

    def _unbound_conf(self, anchors: list[str]) -> str:
        w = self.workdir
        out = [
            "server:",
            f"  interface: {self.resolver_address}",
            "  port: 53",
            "  do-ip6: no",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{w}"',
            f'  pidfile: "{w}/unbound.pid"',
            f'  logfile: "{w}/unbound.log"',
            "  use-syslog: no",
            "  verbosity: 1",
            "  val-log-level: 2",
            "  num-threads: 1",
            "  access-control: 127.0.0.0/8 allow",
            "  do-not-query-localhost: no",  # the stubs are on loopback
            '  module-config: "validator iterator"',
            "  val-permissive-mode: no",
            "  harden-dnssec-stripped: yes",
            "  qname-minimisation: no",
        ]
        out += [f'  trust-anchor: "{a}"' for a in anchors]
        out += [f'  domain-insecure: "{z.name}"' for z in self.zones if not z.signed]
        for zone in self.zones:
            out += ["stub-zone:", f'  name: "{zone.name}"', f"  stub-addr: {self.auth_address}@53"]
        out += ["remote-control:", "  control-enable: no"]
        path = os.path.join(w, "unbound.conf")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")
        return path

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        pending = {"nsd": self.auth_address, "unbound": self.resolver_address}
        while pending:
            for name, proc in (("nsd", self._nsd), ("unbound", self._unbound)):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self._stderr()}")
            for name, address in list(pending.items()):
                # Unbound answers localhost. itself; NSD answers anything (REFUSED will do).
                query = dns.message.make_query("localhost.", "A")
                try:
                    dns.query.udp(query, address, timeout=0.2)
                except (OSError, dns.exception.Timeout):
                    continue
                del pending[name]  # any answer at all (even REFUSED/SERVFAIL) means it listens
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(pending)} not answering:\n{self._stderr()}")
            if pending:
                time.sleep(0.05)

    def _stderr(self) -> str:
        out = []
        for name in ("nsd.stderr", "unbound.stderr", "nsd.log", "unbound.log"):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    out.append(f"--- {name}\n{fh.read()[-3000:]}")
        return "\n".join(out)

    def _mount(self) -> None:
        # trust-ad: glibc passes the AD bit through to Postfix only with this option.
        resolv = f"nameserver {self.resolver_address}\noptions trust-ad\n"
        self._mounts.enter_context(bind_mounted("/etc/resolv.conf", resolv))

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        """Ask Unbound directly (DO + AD set), for tests that check the DNS itself."""
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        query.flags |= dns.flags.AD
        return dns.query.udp(query, self.resolver_address, timeout=5)


_shared: list[TestDns] = []
_users = [0]


@pytest.fixture(scope="session")
def shared_dns() -> Iterator[TestDns]:
    """One NSD + Unbound pair for the whole run; each test module sets its zones (`set_zones`).

    Register it once for all tests with `pytest_plugins = ["tests.harness.dns"]` in conftest.py;
    a module may also import it. Either way there is one instance (the addresses are fixed).
    """
    if not _shared:
        _shared.append(TestDns().start())
    _users[0] += 1
    try:
        yield _shared[0]
    finally:
        _users[0] -= 1
        if _users[0] == 0:
            _shared.pop().stop()


__all__ = [
    "AUTH_ADDRESS",
    "RESOLVER_ADDRESS",
    "SelfSigned",
    "TestDns",
    "Zone",
    "shared_dns",
    "tlsa_rdata",
]
