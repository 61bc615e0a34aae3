"""`zivmilter rekey` and `zivmilter status --keys`: rotating the key-encryption key, online.

The daemons must already write under the new key and read the old one (store.key_file: NEW,
store.previous_key_files: [OLD], then a restart) before `rekey` rewraps what the old one
protects (and carries its access-code pepper over), batch by batch, while mail flows; `status
--keys` says when the old key can go (README "Key rotation"). The work is in the store
(store/rekey.py); this is the shell.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from zivmilter import crypto, defaults
from zivmilter.core import config as config_mod
from zivmilter.errors import KeyFileError, MessageError
from zivmilter.store import KeyUsage, open_store

BATCH = 500  # values per transaction: short enough that the milter's saves barely wait
PAUSE = 0.05  # seconds between batches, so that a large store's rotation leaves room for mail


def cmd_rekey(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    new = crypto.load_kek(args.new_key)  # the same checks as any key file (mode, format)
    current = crypto.load_kek(cfg.store.key_file)
    if crypto.key_id(new) != crypto.key_id(current):
        raise KeyFileError(
            f"{cfg.source}: store.key_file is not {args.new_key}. First make the new key the"
            f" current one: store.key_file: {args.new_key} and the old key under"
            f" store.previous_key_files, then restart `zivmilter run` and `zivmilter portal`"
            f" so that they write under the new key and read both; then run rekey again"
        )
    if args.batch < 1:
        raise MessageError("rekey --batch: at least 1")
    total = 0
    with contextlib.closing(open_store(cfg)) as store:
        while True:
            # Resumable: what is left is whatever is not yet under the current key, so an
            # interrupted run (or a second one) just goes on from there.
            done = store.rekey_batch(args.batch)
            total += done
            if done == 0:
                break
            print(f"rewrapped {total}", file=sys.stderr, flush=True)
            time.sleep(args.pause)
        usage = store.key_usage()
    print(f"rekey: {total} values rewrapped or re-sealed under key {usage.current}")
    _print_usage(usage)
    return 0 if usage.depending_on_others() == 0 else 1


def key_status(cfg: config_mod.Config, as_json: bool) -> int:
    """`zivmilter status --keys`: exit status 0 when nothing depends on a previous key."""
    with contextlib.closing(open_store(cfg, read_only=True)) as store:
        usage = store.key_usage()
    files = dict(
        zip(
            (crypto.key_id(crypto.load_kek(p)).hex() for p in (cfg.store.key_file,
                                                               *cfg.store.previous_key_files)),
            (cfg.store.key_file, *cfg.store.previous_key_files),
            strict=True,
        )
    )  # fmt: skip
    if as_json:
        print(json.dumps(_json(usage, files), indent=2))
    else:
        _print_usage(usage, files)
    return 0 if usage.depending_on_others() == 0 else 1


def _json(usage: KeyUsage, files: dict[str, str]) -> dict[str, Any]:
    return {
        "current": usage.current,
        "keys": [
            {
                "id": kid,
                "file": files.get(kid),
                "current": kid == usage.current,
                "protects": {kind: per.get(kid, 0) for kind, per in usage.counts.items()},
            }
            for kid in usage.ring
        ],
        "unknown": {kind: per.get("", 0) for kind, per in usage.counts.items()},
        "retirable": usage.depending_on_others() == 0,
        # previous keys' peppers carried over by `rekey`: maintenance prunes one no hash names
        "carried_peppers": [{"id": kid, "hashes": n} for kid, n in usage.peppers.items()],
        "peppered_hashes_without_key_id": usage.peppered_without_id,
    }


def _print_usage(usage: KeyUsage, files: dict[str, str] | None = None) -> None:
    for kid in usage.ring:
        role = "current" if kid == usage.current else "previous"
        where = f" {files[kid]}" if files and kid in files else ""
        print(f"key {kid} ({role}){where}")
        _print_counts(usage, kid)
    if any(per.get("", 0) for per in usage.counts.values()):
        print("no key id recorded, or a key not configured (written before key ids?)")
        _print_counts(usage, "")
    _print_peppers(usage)
    if usage.depending_on_others() == 0:
        print("nothing depends on a previous key: they can be removed")
    else:
        print(
            f"{usage.depending_on_others()} values still depend on another key than the"
            " current one: run `zivmilter rekey`"
        )


def _print_peppers(usage: KeyUsage) -> None:
    """The previous keys' access-code peppers a rotation carried over, and what keeps each."""
    for kid, n in usage.peppers.items():
        if n:
            print(f"carried access-code pepper of key {kid}: {n} access-code hashes name it")
        else:
            print(
                f"carried access-code pepper of key {kid}: no access-code hash names it"
                f" (maintenance prunes it {defaults.PEPPER_PRUNE_GRACE // 3600} h after it"
                " first finds so)"
            )
    if usage.peppers and usage.peppered_without_id:
        print(
            f"{usage.peppered_without_id} access-code hashes name no key (written before key"
            " ids): they keep every carried pepper"
        )


def _print_counts(usage: KeyUsage, kid: str) -> None:
    parts = [f"{per.get(kid, 0)} {kind}" for kind, per in usage.counts.items()]
    print("  " + ", ".join(parts))


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "rekey", help="rewrap every stored key under the new key-encryption key, online"
    )
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument(
        "--new-key", required=True, metavar="FILE",
        help="the new key file: already store.key_file, the old one in store.previous_key_files",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=BATCH, metavar="N", help="values per transaction")
    p.add_argument("--pause", type=float, default=PAUSE, metavar="SECONDS",
                   help="pause between batches")  # fmt: skip
    p.set_defaults(handler=cmd_rekey)
