"""SPF for the submission check: pyspf does the RFC 7208 evaluation, dnspython the DNS.

The adapter behind submission.SpfChecker. pyspf looks names up through one module-level function,
`spf.DNSLookup`, with dnspython's default resolver; so that SPF asks the configured resolver
(`transport.resolver`, "IP" or "IP@PORT") and nothing else, that function is replaced once by a
dispatcher that uses the resolver of the check running in this thread (a ContextVar), and pyspf's
own lookup when no checker of ours is running. Every DNS fault is a `temperror` value; a fault of
pyspf itself propagates (the milter then tempfails, SPEC 10).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import spf as pyspf

from zivmilter import defaults
from zivmilter.core.config import Config
from zivmilter.core.submission import SpfResult, SpfVerdict
from zivmilter.transport.resolver import nameserver

_VERDICTS = {v.value: v for v in SpfVerdict}

_current: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar(
    "zivmilter_spf_resolver", default=None
)
_install_lock = threading.Lock()
_original_lookup: Callable[..., Any] | None = None


def _lookup(name: str, qtype: str, strict: Any = True, timeout: float = 30.0) -> list[Any]:
    """pyspf's DNSLookup contract: [((name, qtype), value), ...]; TempError for DNS trouble."""
    resolver = _current.get()
    if resolver is None:
        assert _original_lookup is not None
        return list(_original_lookup(name, qtype, strict, timeout))
    out: list[Any] = []
    try:
        answer = resolver.resolve(
            dns.name.from_text(name),
            dns.rdatatype.from_text(qtype),
            search=False,
            raise_on_no_answer=False,
            lifetime=timeout,
        )
    except dns.resolver.NXDOMAIN:
        return out
    except dns.exception.Timeout as exc:
        raise pyspf.TempError(f"DNS {qtype} {name}: timeout ({exc})") from None
    except dns.resolver.NoNameservers:
        raise pyspf.TempError(f"DNS {qtype} {name}: SERVFAIL or no server answered") from None
    except dns.exception.DNSException as exc:
        raise pyspf.TempError(f"DNS {qtype} {name}: {exc}") from None
    if answer.rrset is None:
        return out
    for rdata in answer.rrset:
        # The value shapes pyspf's own dnspython lookup produces, which its evaluator expects.
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


def _install() -> None:
    global _original_lookup
    with _install_lock:
        if _original_lookup is None:
            _original_lookup = pyspf.DNSLookup
            pyspf.DNSLookup = _lookup


class PySpfChecker:
    """`submission.SpfChecker` with pyspf; thread-safe (each check has its own pyspf query)."""

    def __init__(self, resolver: Sequence[str] = (), timeout: float = defaults.SPF_TIMEOUT) -> None:
        if resolver:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [nameserver(s) for s in resolver]
        else:
            self._resolver = dns.resolver.Resolver()  # /etc/resolv.conf
        self._timeout = timeout
        _install()

    @classmethod
    def from_config(cls, cfg: Config) -> PySpfChecker:
        return cls(cfg.transport.resolver)

    def check(self, client_ip: str, sender: str, helo: str | None = None) -> SpfResult:
        token = _current.set(self._resolver)
        try:
            # querytime bounds all lookups of the check together (RFC 7208 4.6.4).
            verdict, explanation = pyspf.check2(
                i=client_ip, s=sender, h=helo or "unknown", querytime=self._timeout
            )
        except pyspf.TempError as exc:
            return SpfResult(SpfVerdict.TEMPERROR, str(exc))
        except (pyspf.PermError, ValueError) as exc:  # ValueError: pyspf refused the address
            return SpfResult(SpfVerdict.PERMERROR, str(exc))
        finally:
            _current.reset(token)
        return SpfResult(_VERDICTS.get(str(verdict), SpfVerdict.PERMERROR), str(explanation or ""))
