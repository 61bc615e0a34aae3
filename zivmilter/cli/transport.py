"""`zivmilter probe` and `zivmilter odd-refresh`: thin shells over probe.py, cache.py and odd.py.

cli.py registers them through `add_commands(subparsers)`; each handler returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from zivmilter import defaults
from zivmilter.core import config as config_mod
from zivmilter.core.addresses import normalize_domain
from zivmilter.core.facts import NtaFact
from zivmilter.errors import MessageError, StoreError
from zivmilter.transport import grade, nta7516
from zivmilter.transport.cache import TransportCache, db_path, ttl_for
from zivmilter.transport.model import DomainResult, HostResult
from zivmilter.transport.odd import ListReport, refresh
from zivmilter.transport.probe import Prober


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe", help="check a recipient domain's transport security and NTA 7516 status"
    )
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"configuration (default: {defaults.CONFIG_FILE} if present, else built-in defaults)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--no-cache", action="store_true", help="probe now; neither read nor write the cache"
    )
    p.set_defaults(handler=cmd_probe)

    p = subparsers.add_parser(
        "odd-refresh", help="fetch the outbound-direct-delivery domain lists that are due"
    )
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="fetch every list, due or not")
    p.set_defaults(handler=cmd_odd_refresh)


def _load_config(path: str | None) -> tuple[config_mod.Config, bool]:
    """The configuration, and whether it came from a file (only then is the cache used)."""
    if path is not None:
        return config_mod.load(path), True
    if os.path.exists(defaults.CONFIG_FILE):
        return config_mod.load(defaults.CONFIG_FILE), True
    # `probe` needs no organization: a placeholder satisfies the schema's one required key.
    return config_mod.from_mapping({"organization": {"domains": ["localhost.localdomain"]}}), False


def cmd_probe(args: argparse.Namespace) -> int:
    cfg, from_file = _load_config(args.config)
    try:
        domain = normalize_domain(args.domain)
    except ValueError as exc:
        raise MessageError(str(exc)) from None
    cache = None
    if from_file and not args.no_cache:
        try:
            cache = TransportCache(db_path(cfg))
        except StoreError as exc:  # e.g. an admin without write access to store.path
            print(f"zivmilter: warning: {exc}; probing without the cache", file=sys.stderr)
    try:
        result, cached = None, False
        if cache is not None:
            hit = cache.get(domain)
            if hit is not None and hit.expires_at > time.time():
                result, cached = hit.result, True
        if result is None:
            result = Prober(cfg.transport).probe(domain)
            if cache is not None:
                cache.put(result, result.checked_at + ttl_for(result, cfg.transport))
    finally:
        if cache is not None:
            cache.close()
    nta = nta7516.evaluate(
        domain,
        nta7516.interpret(result.nta),
        cfg.nta7516,
        datetime.now(UTC).date(),
        grade.grade_ntamx(result.ntamx),
    )
    report = probe_json(result, cached, nta)
    print(json.dumps(report, indent=2) if args.json else render_probe(result, cached, nta))
    return 0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def probe_json(result: DomainResult, cached: bool, nta: NtaFact) -> dict[str, Any]:
    """The published shape; `reason` and each host's `level`/`reason` say which MX decided.

    `nta7516.ntamx` holds the ntamx hosts' details (as `mx` does for MX hosts) and
    `ntamx_level`/`ntamx_tls_version`/`ntamx_reason` what they meet, i.e. what rule 2 judges
    (null when the record names no ntamx hosts, or the configuration's lists decided)."""
    ntamx = nta.mx_transport
    return {
        "domain": result.domain,
        "level": result.level.value,
        "reason": result.reason,
        "checked_at": _iso(result.checked_at),
        "cached": cached,
        "mx": [h.to_json() for h in result.mx],
        "nta7516": {
            "compliant": nta.compliant,
            "reason": nta.reason,
            "mx": list(nta.mx),
            "records": list(result.nta.records),
            "signed": result.nta.secure,
            "ntamx": [h.to_json() for h in result.ntamx],
            "ntamx_level": ntamx.level.value if ntamx else None,
            "ntamx_tls_version": ntamx.tls_version.value if ntamx and ntamx.tls_version else None,
            "ntamx_reason": ntamx.reason if ntamx else None,
        },
    }


def _host_lines(h: HostResult, kind: str = "MX") -> list[str]:
    addresses = ", ".join(h.addresses) or "no address"
    out = [f"  {kind} {h.preference} {h.host} [{addresses}]: {h.level.value} - {h.reason}"]
    tls = h.tls_version or "no TLS"
    cert = "CA-valid" if h.pkix_valid else f"not CA-valid ({h.pkix_error or 'no certificate'})"
    out.append(
        f"      STARTTLS {'yes' if h.starttls else 'no'}, {tls}, certificate {cert}"
        if h.starttls
        else "      STARTTLS no"
    )
    d = h.dnssec
    out.append(f"      DNSSEC: MX {_yn(d.mx)}, addresses {_yn(d.address)}, TLSA {_yn(d.tlsa)}")
    for record in h.tlsa:
        out.append(f"      TLSA {record}")
    if h.dane_valid is not None:
        out.append(f"      DANE: {'valid' if h.dane_valid else 'NOT valid'}")
    if h.error:
        out.append(f"      problem: {h.error}")
    return out


def _yn(flag: bool) -> str:
    return "signed" if flag else "not signed"


def render_probe(result: DomainResult, cached: bool, nta: NtaFact) -> str:
    version = result.tls_version.value if result.tls_version else "-"
    source = "from cache" if cached else "probed now"
    lines = [
        f"{result.domain}: {result.level.value} (weakest TLS {version})",
        f"  {result.reason}",
        f"  checked {_iso(result.checked_at)} ({source})",
    ]
    for host in result.mx:
        lines += _host_lines(host)
    verdict = "compliant" if nta.compliant else "not compliant"
    lines.append(f"  NTA 7516: {verdict} - {nta.reason}")
    if nta.mx:
        lines.append(f"      ntamx: {', '.join(nta.mx)}")
        ntamx = nta.mx_transport
        if ntamx is None:
            lines.append("      ntamx hosts not probed: NTA 7516 delivery (rule 2) not possible")
        else:
            version = ntamx.tls_version.value if ntamx.tls_version else "-"
            lines.append(
                f"      ntamx level: {ntamx.level.value} (weakest TLS {version}) - {ntamx.reason}"
            )
    for host in result.ntamx:
        lines += _host_lines(host, "ntamx")
    return "\n".join(lines)


def _render_list(r: ListReport) -> list[str]:
    if not r.fetched:
        return [f"{r.url}: not due (copy of {r.domains} domains, {_hours(r.copy_age)} old)"]
    if r.error is None:
        head = f"{r.url}: fetched, {r.domains} domains"
    elif r.ok:
        head = (
            f"{r.url}: FAILED ({r.error}); using the last good copy "
            f"({r.domains} domains, {_hours(r.copy_age)} old)"
        )
    elif r.dropped:
        head = f"{r.url}: FAILED ({r.error}); last good copy older than 7 days, dropped"
    else:
        head = f"{r.url}: FAILED ({r.error}); no copy to use"
    out = [head]
    out += [f"  line {i.number}: {i.text!r} skipped: {i.reason}" for i in r.invalid]
    return out


def _hours(age: float | None) -> str:
    return "?" if age is None else f"{age / 3600:.1f} h"


def cmd_odd_refresh(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if not cfg.policy.outbound_direct_delivery.lists:
        print("no lists configured (policy.outbound_direct_delivery.lists)")
    reports = refresh(cfg, force=args.force)
    for r in reports:
        print("\n".join(_render_list(r)))
    return 0 if all(r.error is None for r in reports) else 1
