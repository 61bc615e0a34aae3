"""`zivmilter store migrate` and `zivmilter store copy`: the store's schema and its move between
backends.

`migrate --config FILE`: bring the configured store's schema up to this zivmilter (PostgreSQL:
run once per upgrade, from one node, before starting the new version on any node; SQLite
migrates on open, so this only opens it). `copy --from CONFIG --to CONFIG`: copy a whole store
into a new, empty one (SQLite to PostgreSQL, or back) and check every content decrypts there.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from zivmilter import crypto
from zivmilter.core import config as config_mod
from zivmilter.store import open_store


def cmd_store_migrate(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if cfg.store.backend == "postgresql":
        from zivmilter.store.postgresql.connection import describe
        from zivmilter.store.postgresql.schema import migrate_database

        crypto.load_kek(cfg.store.key_file)  # the same checks as a start: a bad key file fails now
        before, after = migrate_database(cfg.store.dsn, cfg.store.password_file)
        where = describe(cfg.store.dsn)
    else:
        from zivmilter.store.sqlite import SCHEMA_VERSION

        with contextlib.closing(open_store(cfg)):
            pass
        before, after, where = -1, SCHEMA_VERSION, cfg.store.path
    if before == after:
        print(f"{where}: schema version {after}: up to date")
    elif before < 0:
        print(f"{where}: schema version {after}")
    else:
        print(f"{where}: schema version {before} -> {after}")
    return 0


def cmd_store_copy(args: argparse.Namespace) -> int:
    from zivmilter.store.copy import copy_store

    src = config_mod.load(args.source)
    dst = config_mod.load(args.destination)
    report = copy_store(src, dst)
    rows = ", ".join(f"{table} {n}" for table, n in report.rows.items())
    print(f"copied {src.store.backend} -> {dst.store.backend}: {rows}")
    print(f"checked: {report.contents_checked} messages, replies and attachments decrypt alike")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("store", help="the store's schema (migrate) and moving it (copy)")
    actions = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    m = actions.add_parser("migrate", help="upgrade the configured store's schema")
    m.add_argument("--config", required=True, metavar="FILE")
    m.set_defaults(handler=cmd_store_migrate)
    c = actions.add_parser("copy", help="copy a store into a new, empty one and check it")
    c.add_argument("--from", dest="source", required=True, metavar="CONFIG")
    c.add_argument("--to", dest="destination", required=True, metavar="CONFIG")
    c.set_defaults(handler=cmd_store_copy)
