"""`zivmilter idd add|remove|list`: the store's list of domains with inbound direct delivery.

These count for rule 1 (SPEC 3) besides `idd.domains` of the configuration; the milter reads the
list at most a minute old (livefacts.py).
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from . import config as config_mod
from .addresses import normalize_domain
from .errors import MessageError
from .store import open_configured


def cmd_idd(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    with contextlib.closing(open_configured(cfg)) as store:
        if args.action == "list":
            for domain in sorted(set(store.idd_domains()) | set(cfg.idd.domains)):
                where = "config" if domain in cfg.idd.domains else "store"
                print(f"{domain}\t{where}")
            return 0
        if args.domain is None:
            raise MessageError(f"idd {args.action}: give a DOMAIN")
        try:
            domain = normalize_domain(args.domain)
        except ValueError as exc:
            raise MessageError(f"idd {args.action}: {exc}") from None
        changed = store.set_idd_domain(domain, args.action == "add")
    what = "added" if args.action == "add" else "removed"
    print(f"{domain}: {what}" if changed else f"{domain}: nothing to change")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("idd", help="domains of organizations with inbound direct delivery")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("domain", nargs="?", metavar="DOMAIN")
    p.add_argument("--config", required=True, metavar="FILE")
    p.set_defaults(handler=cmd_idd)
