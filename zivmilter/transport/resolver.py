"""DNS lookups for the prober, through a validating resolver, with its verdict (the AD bit).

Queries carry DO and AD as Postfix's do (RES_USE_DNSSEC, RES_TRUSTAD): the resolver validates and
says so with AD; a bogus answer comes back as SERVFAIL. Every outcome is a `DnsAnswer` value;
probe.py and keyfind.py (OPENPGPKEY, SMIMEA, the WKD hosts' addresses) call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from zivmilter.errors import ConfigError


@dataclass(frozen=True)
class DnsAnswer:
    status: Literal["ok", "nodata", "nxdomain", "error"]
    records: tuple[Any, ...] = ()  # dnspython rdata objects
    secure: bool = False  # the resolver set AD (for nodata/nxdomain: an authenticated denial)
    error: str | None = None
    # The owner name of the answer after CNAME expansion (ok/nodata); equals the query name when
    # there was no CNAME. RFC 7672 2.2.3 looks for TLSA records there first.
    canonical: str | None = None


def nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    host, sep, port = text.rpartition("@")
    if not sep:
        host, port = text, "53"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("<config>", "transport.resolver", f"{text!r} is not IP or IP@PORT")
    try:
        return dns.nameserver.Do53Nameserver(host, int(port))
    except ValueError:
        problem = f"{text!r} is not an IP address"
        raise ConfigError("<config>", "transport.resolver", problem) from None


class Resolver:
    """A thread-safe wrapper of one dnspython resolver (no cache: the prober caches results)."""

    def __init__(self, servers: tuple[str, ...] = ()) -> None:
        if servers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [nameserver(s) for s in servers]
        else:
            try:
                self._resolver = dns.resolver.Resolver()  # /etc/resolv.conf
            except dns.resolver.NoResolverConfiguration:
                problem = "/etc/resolv.conf names no nameserver: set transport.resolver"
                raise ConfigError("<config>", "transport.resolver", problem) from None
        self._resolver.use_edns(0, dns.flags.DO, 1232)
        self._resolver.flags = dns.flags.RD | dns.flags.AD

    def query(self, name: str, rdtype: str, lifetime: float) -> DnsAnswer:
        if lifetime <= 0:
            return DnsAnswer("error", error="time budget exhausted")
        try:
            qname = dns.name.from_text(name)
            answer = self._resolver.resolve(
                qname,
                dns.rdatatype.from_text(rdtype),
                search=False,
                raise_on_no_answer=False,
                lifetime=lifetime,
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.responses().values())  # type: ignore[no-untyped-call]
            secure = bool(responses) and all(r.flags & dns.flags.AD for r in responses)
            return DnsAnswer("nxdomain", secure=secure)
        except dns.resolver.LifetimeTimeout:
            return DnsAnswer("error", error=f"{rdtype} {name}: timeout")
        except dns.resolver.NoNameservers as exc:
            # dnspython words SERVFAIL (what a validator answers for bogus data) into this.
            why = str(exc)
            if "SERVFAIL" in why:
                why = "SERVFAIL (DNSSEC validation failure or broken zone)"
            return DnsAnswer("error", error=f"{rdtype} {name}: {why}")
        except dns.exception.DNSException as exc:
            return DnsAnswer("error", error=f"{rdtype} {name}: {exc}")
        # AD covers the whole response, CNAME chain included: a secure answer is a secure chain.
        secure = bool(answer.response.flags & dns.flags.AD)
        canonical = answer.canonical_name.to_text(omit_final_dot=True).lower()
        if answer.rrset is None:
            return DnsAnswer("nodata", secure=secure, canonical=canonical)
        return DnsAnswer("ok", tuple(answer.rrset), secure, canonical=canonical)
