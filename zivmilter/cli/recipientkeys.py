"""`zivmilter keys import|list|show|remove`: the recipients' public keys the organization keeps
(issue 26). The reading is in keys/keystore.py, the judging in keys/judge.py; this is the shell.
Every listing judges each key now, so an admin sees what the milter would use and why not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from zivmilter.cli import read_file
from zivmilter.core import config as config_mod
from zivmilter.core.keys import RecipientKey
from zivmilter.errors import MessageError
from zivmilter.keys import judge, keystore
from zivmilter.store import StoredKey, open_store


def _verdicts(cfg: config_mod.Config, key: StoredKey) -> dict[str, str]:
    """Per address it was imported for: "usable" or why the milter would skip it now."""
    validate = judge.validator(cfg.encryption.smime.trust_store)
    candidate = keystore.KeystoreSource.candidate(key)
    now = datetime.now(UTC)
    out = {}
    for address in key.addresses:
        got = validate(candidate, address, now)
        out[address] = "usable" if isinstance(got, RecipientKey) else got.reason
    return out


def _as_json(key: StoredKey, verdicts: dict[str, str]) -> dict[str, Any]:
    return {
        "ident": key.ident,
        "kind": key.kind,
        "addresses": list(key.addresses),
        "imported_at": key.imported_at.isoformat() if key.imported_at else None,
        "status": verdicts,
    }


def _line(key: StoredKey, verdicts: dict[str, str]) -> str:
    day = key.imported_at.strftime("%Y-%m-%d") if key.imported_at else "-"
    status = "; ".join(f"{a}: {v}" for a, v in verdicts.items())
    return f"{key.ident}\t{key.kind}\timported {day}\t{status}"


def cmd_keys(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    read_only = args.action in ("list", "show")
    with contextlib.closing(open_store(cfg, read_only=read_only)) as store:
        if args.action == "import":
            read = keystore.read_key_file(read_file(args.file), args.file)
            for item in read:
                key = keystore.stored_key(item, args.address, args.file)
                new = store.import_recipient_key(key)
                stored = store.recipient_key(key.ident) or key
                word = "imported" if new else "replaced"
                print(f"{word} {_line(stored, _verdicts(cfg, stored))}")
            return 0
        if args.action == "remove":
            if store.remove_recipient_key(args.target):
                print(f"{args.target}: removed")
                return 0
            print(f"{args.target}: no such key", file=sys.stderr)
            return 1
        if args.action == "show":
            if "@" in args.target:
                keys = store.recipient_keys(args.target)
            else:
                found = store.recipient_key(args.target)
                keys = [] if found is None else [found]
            if not keys:
                print(f"{args.target}: no imported key", file=sys.stderr)
                return 1
        else:
            keys = store.recipient_keys()
    rows = [(k, _verdicts(cfg, k)) for k in keys]
    if args.json:
        print(json.dumps([_as_json(k, v) for k, v in rows], indent=2))
    else:
        for k, v in rows:
            print(_line(k, v))
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "keys", help="recipients' public keys (OpenPGP, S/MIME) to encrypt to: import, list, ..."
    )
    p.add_argument("action", choices=("import", "list", "show", "remove"))
    p.add_argument(
        "target", nargs="?", metavar="FILE|ADDRESS|IDENT",
        help="import: the key file; show: an address or a key's ident; remove: the ident",
    )  # fmt: skip
    p.add_argument("--address", metavar="A", help="import: for this address of the key only")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help="list, show: print JSON")
    p.set_defaults(handler=_checked)


def _checked(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.target:
        raise MessageError(f"keys {args.action}: give the {_WHAT[args.action]}")
    if args.action == "import":
        args.file = args.target
    return cmd_keys(args)


_WHAT = {"import": "FILE", "show": "ADDRESS or IDENT", "remove": "IDENT"}
