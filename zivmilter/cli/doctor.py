"""`zivmilter doctor`: the checklist of a live installation (ops/doctor.py), printed for an
admin (one line per check, ✓ or ✗, and the fix under each ✗) or as one JSON object.

Exit status 0 when every check passes, 1 when one fails, 2 when the configuration is unusable.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from zivmilter.core import config as config_mod
from zivmilter.ops.checks import Check
from zivmilter.ops.doctor import DEFAULT_DNSSEC_NAME, DoctorOptions, run_checks

DEFAULT_SENDMAIL_CF = "/etc/mail/sendmail.cf"


def render_text(checks: list[Check]) -> str:
    width = max(len(c.id) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{'✓' if c.ok else '✗'} {c.id:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"  {'':<{width}}  fix: {c.fix}")
    faults = sum(1 for c in checks if not c.ok)
    lines.append(f"{len(checks)} checks, {faults} fault{'' if faults == 1 else 's'}")
    return "\n".join(lines)


def render_json(checks: list[Check]) -> str:
    return json.dumps(
        {
            "ok": all(c.ok for c in checks),
            "checks": [{"id": c.id, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in checks],
        },
        ensure_ascii=False,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    sendmail_cf = args.sendmail_config
    if sendmail_cf is None and cfg.milter.mta == "sendmail":
        sendmail_cf = DEFAULT_SENDMAIL_CF
    options = DoctorOptions(
        postfix_dir=args.postfix_config,
        sendmail_cf=sendmail_cf,
        dnssec_name=args.dnssec_name,
        timeout=args.timeout,
    )
    checks = run_checks(cfg, options)
    print(render_json(checks) if args.json else render_text(checks))
    return 0 if all(c.ok for c in checks) else 1


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "doctor", help="check a live installation end to end (Postfix or Sendmail included)"
    )
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument(
        "--postfix-config",
        default="/etc/postfix",
        metavar="DIR",
        help="Postfix's configuration folder (default: /etc/postfix); with Sendmail, the relay "
        "Postfix's that carries direct copies",
    )
    p.add_argument(
        "--sendmail-config",
        metavar="FILE",
        help="check this built sendmail.cf, Sendmail in front (default with milter.mta: "
        f"sendmail: {DEFAULT_SENDMAIL_CF})",
    )
    p.add_argument(
        "--dnssec-name",
        default=DEFAULT_DNSSEC_NAME,
        metavar="NAME",
        help="a DNSSEC-signed name to test the resolver with (default: the root zone)",
    )
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_doctor)
