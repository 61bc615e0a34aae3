"""The organization's DNS for the mail zivmilter writes: SPF, DKIM, DMARC, MTA-STS, TLS-RPT.

`check_domain` looks each record up through the configured resolver (dnspython, as the prober)
and returns `Finding` values, each problem with the record to publish. SPF is evaluated by pyspf
(RFC 7208, as a receiver would, through spf.py's resolver-aware checker, the milter's own);
DMARC's tag list (RFC 7489 6.3) is parsed here. Used by `zivmilter dns-check`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from cryptography.hazmat.primitives import serialization

from zivmilter.transport.resolver import nameserver
from zivmilter.transport.spf import PySpfChecker

Check = Literal["spf", "dkim", "dmarc", "mta-sts", "tls-rpt"]


@dataclass(frozen=True)
class Finding:
    domain: str
    check: Check
    ok: bool
    detail: str
    publish: str | None = None  # the record to publish (zone-file syntax) when not ok

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_tags(text: str) -> dict[str, str]:
    """A DKIM/DMARC/STS tag list `k=v; k=v` (RFC 6376 3.2, RFC 7489 6.4): names lower case."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def public_key_of(path: str) -> str:
    """The base64 SubjectPublicKeyInfo (DKIM p=) of a signer's private key file (PEM), or of a
    public key / TXT record file as opendkim-genkey writes it."""
    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()
    text = "".join(part for part in data.decode().split('"')[1::2]) or data.decode()
    return parse_tags(text).get("p", "")


class Lookup:
    """TXT lookups through the configured resolver ("IP" or "IP@PORT"; empty: resolv.conf)."""

    def __init__(self, servers: Sequence[str] = (), timeout: float = 10.0) -> None:
        if servers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [nameserver(s) for s in servers]
        else:
            self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout
        self.servers = tuple(servers)

    def txt(self, name: str) -> list[str] | None:
        """The TXT strings at `name` (each record's pieces joined); None on a DNS failure."""
        try:
            answer = self._resolver.resolve(
                dns.name.from_text(name), dns.rdatatype.TXT, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException:
            return None
        if answer.rrset is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset]


def _records(lookup: Lookup, name: str, prefix: str) -> list[str] | None:
    found = lookup.txt(name)
    if found is None:
        return None
    return [t for t in found if t.lower().replace(" ", "").startswith(prefix.lower())]


def check_spf(lookup: Lookup, domain: str, addresses: Sequence[str]) -> list[Finding]:
    records = _records(lookup, domain, "v=spf1")
    if records is None:
        return [Finding(domain, "spf", False, f"DNS lookup of TXT {domain} failed")]
    ip_mechs = " ".join(("ip6:" if ":" in a else "ip4:") + a for a in addresses) or "mx"
    wanted = f'{domain}. TXT "v=spf1 {ip_mechs} -all"'
    if not records:
        return [Finding(domain, "spf", False, "no SPF record", wanted)]
    if len(records) > 1:
        return [Finding(domain, "spf", False, "more than one SPF record (permerror)", wanted)]
    checker = PySpfChecker(lookup.servers)
    findings = []
    for address in addresses:
        result = checker.check(address, f"postmaster@{domain}", domain)
        verdict = result.verdict.value
        if verdict == "pass":
            findings.append(Finding(domain, "spf", True, f"{address}: pass"))
            continue
        record = records[0]
        mech = ("ip6:" if ":" in address else "ip4:") + address
        fixed = record.replace(" ~all", f" {mech} ~all").replace(" -all", f" {mech} -all")
        if fixed == record:
            fixed = f"{record} {mech}"
        detail = f"{address}: {verdict}{': ' + result.explanation if result.explanation else ''}"
        findings.append(Finding(domain, "spf", False, detail, f'{domain}. TXT "{fixed}"'))
    if not addresses:
        findings.append(Finding(domain, "spf", True, f"published: {records[0]}"))
    return findings


def check_dkim(
    lookup: Lookup, domain: str, selectors: Sequence[str], key_file: str | None
) -> list[Finding]:
    findings = []
    expected = public_key_of(key_file) if key_file else None
    for selector in selectors:
        name = f"{selector}._domainkey.{domain}"
        found = lookup.txt(name)
        key = expected or "<the signer's public key>"
        publish = f'{name}. TXT "v=DKIM1; k=rsa; p={key}"'
        if found is None:
            findings.append(Finding(domain, "dkim", False, f"DNS lookup of TXT {name} failed"))
            continue
        keys = [parse_tags(t) for t in found if "p=" in t.replace(" ", "")]
        if not keys:
            findings.append(Finding(domain, "dkim", False, f"no DKIM key at {name}", publish))
        elif not keys[0].get("p"):
            findings.append(Finding(domain, "dkim", False, f"{name}: key revoked (p=)", publish))
        elif expected is not None and keys[0]["p"] != expected:
            problem = f"{name}: the published key is not the signer's ({key_file})"
            findings.append(Finding(domain, "dkim", False, problem, publish))
        else:
            detail = f"{name}: published" + (", matches the signer's key" if expected else "")
            findings.append(Finding(domain, "dkim", True, detail))
    return findings


def dmarc_meaning(tags: dict[str, str]) -> str:
    policy = tags.get("p", "none")
    align = "strict" if tags.get("adkim") == "s" else "relaxed"
    if policy in ("reject", "quarantine"):
        what = "refused" if policy == "reject" else "put in the spam folder"
        return (
            f"p={policy}: mail with a From at this domain that is not DKIM-aligned ({align})"
            f" or SPF-aligned is {what}; the DSN (null sender) passes only by its DKIM signature"
        )
    return "p=none: receivers only report; unsigned notifications are still delivered"


def check_dmarc(lookup: Lookup, domain: str) -> list[Finding]:
    name = f"_dmarc.{domain}"
    records = _records(lookup, name, "v=DMARC1")
    publish = f'{name}. TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"'
    if records is None:
        return [Finding(domain, "dmarc", False, f"DNS lookup of TXT {name} failed")]
    if len(records) != 1:
        problem = "no DMARC record" if not records else "more than one DMARC record (ignored)"
        return [Finding(domain, "dmarc", False, problem, publish)]
    tags = parse_tags(records[0])
    if tags.get("p") not in ("none", "quarantine", "reject"):
        problem = (
            f"p={tags.get('p', '')!r} is not none, quarantine or reject: the record is invalid"
        )
        return [Finding(domain, "dmarc", False, problem, publish)]
    return [Finding(domain, "dmarc", True, dmarc_meaning(tags))]


def check_optional(lookup: Lookup, domain: str) -> list[Finding]:
    """MTA-STS and TLS-RPT: checked when published, never required."""
    findings = []
    checks: tuple[tuple[Check, str, str, str], ...] = (
        ("mta-sts", f"_mta-sts.{domain}", "v=STSv1", f'_mta-sts.{domain}. TXT "v=STSv1; id=1"'),
        ("tls-rpt", f"_smtp._tls.{domain}", "v=TLSRPTv1",
         f'_smtp._tls.{domain}. TXT "v=TLSRPTv1; rua=mailto:postmaster@{domain}"'),
    )  # fmt: skip
    for check, name, version, publish in checks:
        records = _records(lookup, name, version)
        if not records:
            continue
        tags = parse_tags(records[0])
        valid = (
            bool(tags.get("id"))
            if check == "mta-sts"
            else tags.get("rua", "").startswith(("mailto:", "https:"))
        )
        if len(records) > 1 or not valid:
            findings.append(
                Finding(domain, check, False, f"{name}: invalid: {records[0]}", publish)
            )
        else:
            findings.append(Finding(domain, check, True, f"{name}: {records[0]}"))
    return findings


def check_domain(
    lookup: Lookup,
    domain: str,
    *,
    addresses: Sequence[str] = (),
    selectors: Sequence[str] = (),
    key_file: str | None = None,
) -> list[Finding]:
    return [
        *check_spf(lookup, domain, addresses),
        *check_dkim(lookup, domain, selectors, key_file),
        *check_dmarc(lookup, domain),
        *check_optional(lookup, domain),
    ]
