"""Finding recipients' own keys on the network: OpenPGP Web Key Directory (HTTPS, PKIX),
OPENPGPKEY (RFC 7929) and SMIMEA (RFC 8162), both only when DNSSEC-validated, and a TTL cache
in front of any source.

Sources only find (`core.keys.Candidate`, with a `provenance` saying how far it can be believed);
the validator judges. DNS goes through the prober's validating resolver (resolver.py), whose AD
bit is the DNSSEC verdict; nothing here validates signatures itself. No source raises for an
unknown address or an unreachable server: it finds nothing and logs why.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import socket
import ssl
import threading
import time
import unicodedata
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from zivmilter import defaults
from zivmilter.core.addresses import normalize_domain
from zivmilter.core.keys import Candidate, CandidateSource, KeyKind, KeySource
from zivmilter.errors import ConfigError
from zivmilter.transport.resolver import DnsAnswer, Resolver

log = logging.getLogger("zivmilter.transport")

Clock = Callable[[], float]

# Bounds of one lookup; constructor parameters override them (encryption.* in the config).
LOOKUP_TIMEOUT = defaults.KEY_LOOKUP_TIMEOUT  # a whole lookup: DNS, connection, TLS, answer
WKD_MAX_BYTES = defaults.WKD_MAX_BYTES  # a larger WKD response is refused
CACHE_TTL = float(defaults.KEY_CACHE_TTL)  # seconds a lookup's outcome is reused
FAILURE_TTL = 60.0  # seconds a failed lookup (unreachable, SERVFAIL) is remembered
CACHE_ENTRIES = 10_000  # addresses kept; the least recently used go first

_ZBASE32 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"ybndrfg8ejkmcpqxot1uwisza345h769")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class Found:
    """What one lookup gave: the candidates, and whether the answer was conclusive (a key or a
    definite "none"); an unreachable server or a DNS failure is not, and is cached briefly."""

    candidates: tuple[Candidate, ...] = ()
    conclusive: bool = True


@runtime_checkable
class ReportingSource(Protocol):
    """A `CandidateSource` that also says whether its answer was conclusive (`CachedSource`
    keeps inconclusive ones only for `failure_ttl`)."""

    def find(self, address: str) -> Found: ...

    def candidates(self, address: str) -> Sequence[Candidate]: ...


# --- names ---------------------------------------------------------------------------------


def zbase32(data: bytes) -> str:
    """z-base-32 (the alphabet of draft-koch-openpgp-webkey-service) of `data` whose length is a
    multiple of 5 bytes, as a SHA-1 digest is: RFC 4648 base32 with another alphabet."""
    if len(data) % 5:
        raise ValueError("z-base-32 here takes whole 40-bit groups (a SHA-1 digest)")
    return base64.b32encode(data).translate(_ZBASE32).decode("ascii")


def wkd_hash(local: str) -> str:
    """The WKD hashed local part: only ASCII upper case is folded (as the draft says), then
    SHA-1, then z-base-32."""
    folded = local.translate(_ASCII_LOWER)
    return zbase32(hashlib.sha1(folded.encode("utf-8")).digest())


def wkd_urls(address: str) -> tuple[str, str]:
    """The advanced and the direct method's URLs for an address."""
    local, domain = _split(address)
    query = urllib.parse.quote(local, safe="")
    hashed = wkd_hash(local)
    return (
        f"https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{hashed}?l={query}",
        f"https://{domain}/.well-known/openpgpkey/hu/{hashed}?l={query}",
    )


def dane_owner(address: str, label: str) -> list[str]:
    """RFC 7929 section 3 / RFC 8162 section 3: SHA2-256 of the local part, truncated to 28
    octets, in hex, under `label` (`_openpgpkey` or `_smimecert`) of the domain. The local part
    as given (NFC), then lower-cased if that differs: publishing tools (GnuPG) lower-case it."""
    local, domain = _split(address)
    forms = [unicodedata.normalize("NFC", local)]
    if forms[0].lower() != forms[0]:
        forms.append(forms[0].lower())
    digests = [hashlib.sha256(f.encode("utf-8")).digest()[:28].hex() for f in forms]
    return [f"{d}.{label}.{domain}" for d in digests]


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or not local:
        raise ValueError(f"{address!r} is not an address")
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = local[1:-1]  # RFC 7929 3: enclosing quotes are removed
    return local, normalize_domain(domain)


# --- WKD -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int | None  # None: no HTTP answer at all
    body: bytes = b""
    problem: str | None = None


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address our resolver found, the certificate checked for the host name."""

    def __init__(
        self, host: str, address: str, port: int, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class WkdSource:
    """OpenPGP Web Key Directory (draft-koch-openpgp-webkey-service, section 3.1).

    The advanced method when `openpgpkey.DOMAIN` has an address, else the direct method: the
    draft falls back "only if an address for the required sub-domain does not exist", not when
    its server fails (that would hand an address to whoever runs the apex web site). HTTPS
    with PKIX verification against `ca_file` (or the system's CAs), no redirects followed, the
    response bounded in bytes and time. The policy file is not fetched: the draft requires the
    server to publish it for the update protocol, and key lookup does not depend on it.
    """

    def __init__(
        self,
        resolver: Resolver,
        *,
        ca_file: str | None = None,
        timeout: float = LOOKUP_TIMEOUT,
        max_bytes: int = WKD_MAX_BYTES,
        port: int = 443,
    ) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.port = port
        try:
            self.tls = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            problem = f"{ca_file!r} is no readable PEM file of CA certificates: {exc}"
            raise ConfigError("<config>", "encryption.wkd.ca_file", problem) from None
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2

    def candidates(self, address: str) -> Sequence[Candidate]:
        return self.find(address).candidates

    def find(self, address: str) -> Found:
        try:
            advanced, direct = wkd_urls(address)
        except ValueError as exc:
            log.info("WKD: %s", exc)
            return Found()
        deadline = time.monotonic() + self.timeout
        try:
            return self._find(address, advanced, direct, deadline)
        except Exception:  # a fault here must not reach the milter
            log.exception("WKD lookup for %s failed", address)
            return Found(conclusive=False)

    def _find(self, address: str, advanced: str, direct: str, deadline: float) -> Found:
        sub = urllib.parse.urlsplit(advanced).hostname or ""
        addresses, problem = self._addresses(sub, deadline)
        if problem is not None:
            log.info("WKD for %s: %s; not looked up", address, problem)
            return Found(conclusive=False)
        method, url = ("advanced", advanced) if addresses else ("direct", direct)
        if not addresses:
            host = urllib.parse.urlsplit(direct).hostname or ""
            addresses, problem = self._addresses(host, deadline)
            if problem is not None or not addresses:
                log.info("WKD for %s: %s", address, problem or f"{host} has no address")
                return Found(conclusive=problem is None)
        reply = self._get(url, addresses, deadline)
        if reply.status == 200 and not _looks_openpgp(reply.body):
            # A web site's "soft 404" (its HTML page for any path) is no key.
            log.info("WKD for %s: %s answered no OpenPGP data; no key", address, url)
            return Found()
        if reply.status == 200:
            provenance = f"WKD {method} method, {url} (PKIX)"
            return Found((Candidate(KeyKind.OPENPGP, reply.body, KeySource.WKD, provenance),))
        if reply.status is not None and reply.status < 500:
            # 404 (no key), an empty 200, a redirect (not followed: the key must come from
            # the host the method names) or another refusal: a definite "none" from this host.
            log.info("WKD for %s: no key at %s (HTTP %s)", address, url, reply.status)
            return Found()
        log.info("WKD for %s: %s: %s", address, url, reply.problem or f"HTTP {reply.status}")
        return Found(conclusive=False)

    def _addresses(self, host: str, deadline: float) -> tuple[list[str], str | None]:
        """The host's addresses through our resolver; a problem if DNS gave no verdict."""
        found: list[str] = []
        errors: list[str] = []
        for rdtype in ("A", "AAAA"):
            answer = self.resolver.query(host, rdtype, deadline - time.monotonic())
            if answer.status == "error":
                errors.append(f"{rdtype} {host}: {answer.error}")
            found += [r.address for r in answer.records if hasattr(r, "address")]
        # An address of one family is enough; without any, a failed query leaves it unknown.
        return found, (errors[0] if errors and not found else None)

    def _get(self, url: str, addresses: list[str], deadline: float) -> _Reply:
        parts = urllib.parse.urlsplit(url)
        host, target = parts.hostname or "", f"{parts.path}?{parts.query}"
        reply = _Reply(None, problem="no address")
        for ip in addresses:
            left = deadline - time.monotonic()
            if left <= 0:
                return _Reply(None, problem="time budget exhausted")
            reply = self._get_from(host, ip, target, left, deadline)
            if reply.status is not None:
                return reply
        return reply

    def _get_from(self, host: str, ip: str, target: str, left: float, deadline: float) -> _Reply:
        conn = _PinnedHTTPSConnection(host, ip, self.port, self.tls, left)
        try:
            conn.request("GET", target, headers={"Accept": "application/octet-stream"})
            response = conn.getresponse()
            if response.status != 200:
                return _Reply(response.status)
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                return _Reply(None, problem=f"response of {length} bytes refused")
            body = bytearray()
            while len(body) <= self.max_bytes:
                if time.monotonic() > deadline:
                    return _Reply(None, problem="time budget exhausted")
                chunk = response.read(min(65536, self.max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            if len(body) > self.max_bytes:
                return _Reply(None, problem=f"response over {self.max_bytes} bytes refused")
            return _Reply(200, bytes(body))
        except ssl.SSLCertVerificationError as exc:
            why = f"{host} ({ip}): certificate not trusted: {exc.verify_message}"
            return _Reply(None, problem=why)
        except (OSError, http.client.HTTPException) as exc:
            return _Reply(None, problem=f"{host} ({ip}): {exc or type(exc).__name__}")
        finally:
            conn.close()


def _looks_openpgp(body: bytes) -> bool:
    """A binary OpenPGP packet (the tag octet's high bit, RFC 9580 4.2) or ASCII armor; the
    validator reads it properly."""
    return bool(body) and (body[0] & 0x80 != 0 or body.lstrip().startswith(b"-----BEGIN PGP"))


# --- DNSSEC-validated DNS records ----------------------------------------------------------


class _DaneSource:
    """What OPENPGPKEY and SMIMEA share: the owner names, the query, the AD bit."""

    label = ""
    rdtype = ""

    def __init__(self, resolver: Resolver, *, timeout: float = LOOKUP_TIMEOUT) -> None:
        self.resolver = resolver
        self.timeout = timeout

    def candidates(self, address: str) -> Sequence[Candidate]:
        return self.find(address).candidates

    def find(self, address: str) -> Found:
        try:
            owners = dane_owner(address, self.label)
        except ValueError as exc:
            log.info("%s: %s", self.rdtype, exc)
            return Found()
        deadline = time.monotonic() + self.timeout
        try:
            for owner in owners:
                answer = self.resolver.query(owner, self.rdtype, deadline - time.monotonic())
                found = self._judge_answer(address, owner, answer)
                if found.candidates or not found.conclusive:
                    return found
            return Found()
        except Exception:  # a fault here must not reach the milter
            log.exception("%s lookup for %s failed", self.rdtype, address)
            return Found(conclusive=False)

    def _judge_answer(self, address: str, owner: str, answer: DnsAnswer) -> Found:
        if answer.status == "error":
            log.info("%s for %s: %s; ignored", self.rdtype, address, answer.error)
            return Found(conclusive=False)
        if answer.status != "ok":
            return Found()
        if not answer.secure:
            log.info(
                "%s for %s at %s: not DNSSEC-validated (no AD bit); ignored",
                self.rdtype,
                address,
                owner,
            )
            return Found()
        return Found(tuple(self._candidates(address, owner, answer.records)))

    def _candidates(self, address: str, owner: str, records: tuple[object, ...]) -> list[Candidate]:
        raise NotImplementedError


class OpenpgpkeySource(_DaneSource):
    """RFC 7929 OPENPGPKEY records, only from a DNSSEC-validated answer."""

    label = "_openpgpkey"
    rdtype = "OPENPGPKEY"

    def _candidates(self, address: str, owner: str, records: tuple[object, ...]) -> list[Candidate]:
        provenance = f"OPENPGPKEY at {owner} (DNSSEC-validated)"
        return [
            Candidate(KeyKind.OPENPGP, bytes(r.key), KeySource.OPENPGPKEY, provenance)  # type: ignore[attr-defined]
            for r in records
        ]


# RFC 8162 section 2.1 (the usages of RFC 6698) by number.
_USAGES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}


class SmimeaSource(_DaneSource):
    """RFC 8162 SMIMEA records, only from a DNSSEC-validated answer.

    A record that holds a whole certificate (selector 0, matching type 0) for the end entity
    (usage PKIX-EE(1) or DANE-EE(3)) is a candidate; its usage is in the provenance and in
    `needs_ca_chain`: PKIX-EE still asks for a chain to a trusted CA, DANE-EE rests on DNSSEC
    alone. Every other record is skipped with a log line: a hash or a bare public key is no
    certificate to encrypt to (S/MIME needs one), and a TA usage names a CA, not the recipient.
    """

    label = "_smimecert"
    rdtype = "SMIMEA"

    def _candidates(self, address: str, owner: str, records: tuple[object, ...]) -> list[Candidate]:
        out = []
        for r in records:
            usage, selector, mtype = r.usage, r.selector, r.mtype  # type: ignore[attr-defined]
            name = _USAGES.get(usage, "unknown usage")
            if usage in (1, 3) and selector == 0 and mtype == 0:
                provenance = f"SMIMEA {name}({usage}) at {owner} (DNSSEC-validated)"
                material = bytes(r.cert)  # type: ignore[attr-defined]
                out.append(
                    Candidate(
                        KeyKind.SMIME,
                        material,
                        KeySource.SMIMEA,
                        provenance,
                        needs_ca_chain=usage != 3,  # DANE-EE: DNSSEC alone vouches
                    )
                )
                continue
            why = (
                "names a CA, not the recipient's certificate"
                if usage in (0, 2)
                else "holds no whole certificate (selector/matching type)"
            )
            log.info(
                "SMIMEA for %s at %s: record %s(%s) %s %s skipped: %s",
                address,
                owner,
                name,
                usage,
                selector,
                mtype,
                why,
            )
        return out


# --- the cache -----------------------------------------------------------------------------


class CachedSource:
    """Any source's answers reused for `ttl` seconds per address (the empty ones too), and a
    failed lookup of a `ReportingSource` for `failure_ttl` only, so a server that was down is
    asked again soon but not on every message. Thread-safe; at most `max_entries` addresses."""

    def __init__(
        self,
        source: CandidateSource,
        ttl: float = CACHE_TTL,
        *,
        failure_ttl: float = FAILURE_TTL,
        max_entries: int = CACHE_ENTRIES,
        clock: Clock = time.monotonic,
    ) -> None:
        self.source = source
        self.ttl = ttl
        self.failure_ttl = min(failure_ttl, ttl)
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[Candidate, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def candidates(self, address: str) -> Sequence[Candidate]:
        # One entry per address whatever its case (WKD's hash folds ASCII case; OPENPGPKEY and
        # SMIMEA try the lower-cased local part too), as the finder judges it.
        key = address.strip().lower()
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > now:
                self._entries.move_to_end(key)
                return entry[1]
        if isinstance(self.source, ReportingSource):
            found = self.source.find(address)
        else:
            found = Found(tuple(self.source.candidates(address)))
        keep = self.ttl if found.conclusive else self.failure_ttl
        with self._lock:
            self._entries[key] = (now + keep, found.candidates)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return found.candidates


def network_sources(
    resolver: Resolver,
    *,
    cache_ttl: float = CACHE_TTL,
    timeout: float = LOOKUP_TIMEOUT,
    wkd_ca_file: str | None = None,
    wkd_max_bytes: int = WKD_MAX_BYTES,
) -> dict[KeySource, CandidateSource]:
    """The three network sources, each behind its own cache, by the `KeySource` value the
    configured order names (the organization's key store is the caller's to add)."""
    wkd = WkdSource(resolver, ca_file=wkd_ca_file, timeout=timeout, max_bytes=wkd_max_bytes)
    return {
        KeySource.WKD: CachedSource(wkd, cache_ttl),
        KeySource.OPENPGPKEY: CachedSource(OpenpgpkeySource(resolver, timeout=timeout), cache_ttl),
        KeySource.SMIMEA: CachedSource(SmimeaSource(resolver, timeout=timeout), cache_ttl),
    }


__all__ = [
    "CachedSource",
    "Found",
    "OpenpgpkeySource",
    "ReportingSource",
    "SmimeaSource",
    "WkdSource",
    "dane_owner",
    "network_sources",
    "wkd_hash",
    "wkd_urls",
    "zbase32",
]
