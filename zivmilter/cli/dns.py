"""`zivmilter dns-check`: the organization's DNS (SPF, DKIM, DMARC, MTA-STS, TLS-RPT) for the
mail zivmilter writes, and with --postfix-config the milter order a DKIM signer needs (issue 23).
Exit status 1 when something is wrong; each problem comes with the record or setting to change.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from typing import Any

from zivmilter.core import config as config_mod
from zivmilter.core import dkim
from zivmilter.transport import dnscheck


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dns-check", help="check the organization's SPF, DKIM, DMARC (and MTA-STS, TLS-RPT)"
    )
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument(
        "--sending-ip",
        action="append",
        default=[],
        metavar="IP",
        help="a public address the gateway sends from; SPF must authorize it (repeatable)",
    )
    p.add_argument(
        "--selector",
        action="append",
        default=[],
        metavar="S",
        help="DKIM selector the signer uses (repeatable)",
    )
    p.add_argument("--dkim-key", metavar="FILE", help="the signer's key (or its .txt record)")
    p.add_argument(
        "--postfix-config",
        metavar="DIR",
        help="also check the milter order in this Postfix configuration (postconf -c DIR)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_dns_check)


def postfix_problems(cfg: config_mod.Config, directory: str) -> list[dkim.OrderProblem]:
    """The milter-order findings for the Postfix configuration in `directory`."""

    def postconf(*args: str) -> str:
        done = subprocess.run(
            ["postconf", "-c", directory, *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    names = ("smtpd_milters", "non_smtpd_milters")
    values = postconf("-h", *names).splitlines()
    main = dict(zip(names, [*values, "", ""], strict=False))
    services: dict[str, str] = {}
    for line in postconf("-P").splitlines():
        key, _, value = line.partition(" = ")
        services[key.strip()] = value.strip()
    # libmilter's inet:PORT@HOST, as Postfix writes it: inet:HOST:PORT
    sock = cfg.milter.socket
    if sock.startswith("inet:") and "@" in sock:
        port, _, host = sock[5:].partition("@")
        sock = f"inet:{host}:{port}"
    elif sock.startswith("local:"):
        sock = "unix:" + sock[6:]
    listener = f"{cfg.reinject.host}:{cfg.reinject.port}"
    return dkim.postfix_order_problems(main, services, sock, listener)


def cmd_dns_check(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    lookup = dnscheck.Lookup(cfg.transport.resolver)
    findings: list[dnscheck.Finding] = []
    for domain in cfg.organization.domains:
        findings += dnscheck.check_domain(
            lookup,
            domain,
            addresses=args.sending_ip,
            selectors=args.selector,
            key_file=args.dkim_key,
        )
    order = postfix_problems(cfg, args.postfix_config) if args.postfix_config else []
    bad = any(not f.ok for f in findings) or bool(order)
    if args.json:
        out = {
            "ok": not bad,
            "findings": [f.as_dict() for f in findings],
            "postfix": [vars(p) for p in order],
        }
        print(json.dumps(out, indent=2))
        return 1 if bad else 0
    for f in findings:
        print(f"{f.domain} {f.check}: {'ok' if f.ok else 'PROBLEM'}: {f.detail}")
        if f.publish:
            print(f"    publish: {f.publish}")
    for p in order:
        print(f"postfix {p.parameter}: PROBLEM: {p.problem}")
        print(f"    fix: {p.fix}")
    return 1 if bad else 0
