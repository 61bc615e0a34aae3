"""Admin commands on the store: `zivmilter idd` and `zivmilter maintenance`.

`idd add|remove|list`: domains with inbound direct delivery, counted for rule 1 (SPEC 3) besides
`idd.domains`; the milter reads them at most a minute old (livefacts.py). `maintenance` (hourly,
systemd timer): revoke expired messages, remove blob files a crash left without their rows, and
hand the MTA the secure replies it did not take when they were written (a reply it refuses for
good, 5xx, is reported once and not offered again, unless `--retry-refused` asks for it after
the cause, for example the re-injection listener's own restrictions, is mended), finish the
erasure of revoked data keys that a reader kept in the write-ahead log, and let go of a previous
key's access-code pepper that a rotation carried over once no stored hash names it (a day after
a run first found so: store/peppers.py), and forget the sign-in counters of addresses without a
sender account a week after their last wrong sign-in (store/senders.py). One run at a time, on
every node of a store (the store's housekeeping lock): a second run at once does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from zivmilter import metrics
from zivmilter.core import config as config_mod
from zivmilter.core.addresses import normalize_domain
from zivmilter.delivery.replies import reply_reinjector, resend_replies
from zivmilter.errors import MessageError
from zivmilter.store import Store, open_store


def cmd_idd(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    with contextlib.closing(open_store(cfg, read_only=args.action == "list")) as store:
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


def _resend_replies(
    cfg: config_mod.Config, store: Store, retry_refused: bool
) -> tuple[int, int, int]:
    """(sent, still failing, refused for good) of the replies the MTA has not taken yet."""
    reinjector = reply_reinjector(cfg.reinject)
    # The portal hands a reply over as it is written and marks it sent after the MTA's answer
    # (at most reinject.timeout per SMTP step): a younger reply may be on its way right now.
    done = resend_replies(
        store, reinjector, cfg.organization.portal_from,
        older_than=3 * cfg.reinject.timeout + 60, retry_refused=retry_refused,
    )  # fmt: skip
    for refusal in done.refused:  # as it is, it never will be taken: say so once
        print(f"reply {refusal.reply_id} to {refusal.to} refused for good: {refusal.detail}")
    return done.sent, done.failed, len(done.refused)


def cmd_maintenance(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    with contextlib.closing(open_store(cfg)) as store, store.housekeeping_lock() as ours:
        if not ours:  # on this node or another: that run hands each reply over, not this one
            print("another maintenance run holds the housekeeping lock: nothing done")
            return 0
        # Replies first: one written before its message expires still gets its chance.
        sent, failed, refused = _resend_replies(cfg, store, args.retry_refused)
        expired = store.purge_expired()
        orphans = store.sweep_orphans()
        # Revocations (by `revoke`, the portal or expiry) whose old pages a reader held.
        erased = store.finish_erasure()
        # After expiry: a revoked message's access codes no longer keep an old key's pepper.
        pruned = store.prune_peppers()
        # Sign-in counters of addresses without an account, once lock and window have passed.
        store.prune_sign_in_counts()
    metrics.write_textfile(
        cfg.metrics.textfile,
        {
            "expired": expired,
            "orphans": orphans,
            "replies_sent": sent,
            "replies_failing": failed,
            "replies_refused": refused,
        },
    )
    print(
        f"expired messages revoked: {expired}; orphan blobs removed: {orphans}; "
        f"replies handed to the MTA: {sent}; still failing: {failed}; refused for good: {refused}"
    )
    for kid in pruned:
        print(f"access-code pepper of key {kid} pruned: no stored access-code hash names it")
    if erased:
        print("revoked data keys: erased from the disk (write-ahead log checkpointed)")
    else:
        print(
            "revoked data keys: a copy may remain in the write-ahead log, which another process"
            " is reading; the next checkpoint or maintenance run erases it"
        )
    return 1 if failed or refused or not erased else 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("maintenance", help="expiry, orphan blobs, unsent replies (hourly)")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument(
        "--retry-refused",
        action="store_true",
        help="offer the MTA again the replies it refused for good (after mending the cause)",
    )
    p.set_defaults(handler=cmd_maintenance)

    p = sub.add_parser("idd", help="domains of organizations with inbound direct delivery")
    p.add_argument("action", choices=("add", "remove", "list"))
    p.add_argument("domain", nargs="?", metavar="DOMAIN")
    p.add_argument("--config", required=True, metavar="FILE")
    p.set_defaults(handler=cmd_idd)
