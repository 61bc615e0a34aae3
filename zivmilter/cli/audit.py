"""`zivmilter audit export`: the audit log as JSON lines on stdout (ops/audit.py), for a SIEM
or an auditor. `--since` takes a date or a date and time (UTC unless it names its zone)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import UTC, datetime
from typing import Any

from zivmilter.core import config as config_mod
from zivmilter.errors import MessageError
from zivmilter.ops.audit import json_lines
from zivmilter.store import open_store


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MessageError(f"--since: {text!r} is not a date (YYYY-MM-DD[THH:MM[:SS]])") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_audit_export(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    since = _since(args.since)
    with contextlib.closing(open_store(cfg, read_only=True)) as store:
        for line in json_lines(store.export_events(since, args.message)):
            sys.stdout.write(line + "\n")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("audit", help="the audit log, for compliance")
    actions = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    e = actions.add_parser("export", help="every event as JSON lines (no secrets)")
    e.add_argument("--config", required=True, metavar="FILE")
    e.add_argument("--since", metavar="DATE", help="from this date or time on (UTC by default)")
    e.add_argument("--message", metavar="ID", help="only the events of this stored message")
    e.set_defaults(handler=cmd_audit_export)
