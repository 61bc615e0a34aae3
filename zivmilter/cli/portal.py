"""`zivmilter portal`, `revoke`, `status` and `contacts`: thin shells over the store and the app.

`portal` serves the app (its wiring is portal/asgi.py) with uvicorn on `portal.listen`; the
access log stays off because the first URL of a visit holds the link token. The other commands
are for admins and senders' helpdesks; each prints one line per fact and exits 1 when there was
nothing to act on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from zivmilter import logsetup, sdnotify
from zivmilter.core import config as config_mod
from zivmilter.errors import ConfigError, MessageError
from zivmilter.mail.notification import mask_phone
from zivmilter.store import ContactEntry, MessageRecord, RecipientRecord, Store, open_store

log = logging.getLogger("zivmilter.portal")


def cmd_portal(args: argparse.Namespace) -> int:
    import uvicorn

    from zivmilter.portal.app import create_app
    from zivmilter.portal.asgi import ASGI_FACTORY, ENV_CONFIG, build_portal, parse_listen

    cfg = config_mod.load(args.config)
    logsetup.setup(cfg.logging.level, fmt=cfg.logging.format)
    host, port = parse_listen(cfg.portal.listen, cfg.source)
    common: dict[str, Any] = {
        "access_log": False,  # the first URL of a visit is a credential
        "server_header": False,
        "proxy_headers": False,
        "log_config": None,  # keep our log format (logsetup)
        # uvloop and httptools (the portal extra) where installed, else asyncio and h11: the
        # C loop and parser cost less CPU per request (bench/portal.sh).
        "loop": "auto",
        "http": "auto",
        "timeout_graceful_shutdown": 10,
    }
    workers = args.workers or cfg.portal.workers
    if workers > 1:
        os.environ[ENV_CONFIG] = os.path.abspath(args.config)
        uvicorn.run(
            ASGI_FACTORY,
            factory=True, host=host, port=port, workers=workers, **common,
        )  # fmt: skip
        return 0
    app = create_app(build_portal(cfg), on_ready=lambda: sdnotify.notify("READY=1"))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(cfg.source, "portal.listen", f"cannot listen: {exc.strerror}") from None
    # Listening before the app starts: READY=1 (sent at startup) is then true.
    sock.listen(1024)
    log.info("portal listening on %s:%d for %s", host, port, cfg.portal.base_url)
    server = uvicorn.Server(uvicorn.Config(app, **common))
    server.run(sockets=[sock])
    return 0


# --- revoke, status ---------------------------------------------------------------------------


def _messages(store: Store, ref: str) -> list[MessageRecord]:
    found = store.find_messages(ref)
    if not found:
        print(f"zivmilter: no stored message with id or Message-ID {ref}", file=sys.stderr)
    return found


def cmd_revoke(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    store = open_store(cfg)
    try:
        found = _messages(store, args.message_id)
        acted = 0
        for message in found:
            acted += int(_revoke_one(store, message, args.recipient))
        return 0 if acted else 1
    finally:
        store.close()


def _revoke_one(store: Store, message: MessageRecord, recipient: str | None) -> bool:
    """Revoke one stored message (or one of its links); False when there was nothing to do."""
    rcpts = store.recipients(message.id)
    notified = [r for r in rcpts if r.delivery == "notification"]
    direct = [r for r in rcpts if r.delivery == "direct"]
    label = f"{message.id} ({message.rfc822_id or 'no Message-ID'})"
    if message.revoked_at is not None:
        print(f"{label}: already revoked")
        return False
    if recipient is not None:
        try:
            from zivmilter.core.addresses import normalize_address

            key = normalize_address(recipient)
        except MessageError as exc:
            raise MessageError(f"--recipient {recipient}: {exc}") from None
        match = [r for r in rcpts if r.address == key]
        if not match:
            print(f"{label}: {key} is not a recipient", file=sys.stderr)
            return False
        if match[0].delivery == "direct":
            print(
                f"{label}: {key} got the message by direct delivery: it cannot be revoked "
                "(it counts as read since sending)",
                file=sys.stderr,
            )
            return False
        unsent = _unsent_replies(store, message.id)
        if not store.revoke_recipient(message.id, key, "revoked by `zivmilter revoke`"):
            print(f"{label}: the link of {key} was already revoked")
            return False
        gone = store.message(message.id)
        whole = gone is not None and gone.revoked_at is not None
        print(
            f"{label}: revoked for {key}"
            + (
                "; no open link was left, so the message's data key is "
                + ("destroyed" if store.finish_erasure() else _KEY_PENDING)
                if whole
                else ""
            )
            + (_unsent_note(unsent) if whole else "")
        )
        return True
    if not notified:
        print(
            f"{label}: delivered directly to every recipient: it cannot be revoked",
            file=sys.stderr,
        )
        return False
    unsent = _unsent_replies(store, message.id)
    if not store.revoke(message.id, "revoked by `zivmilter revoke`"):
        print(f"{label}: already revoked")
        return False
    destroyed = "data key destroyed" if store.finish_erasure() else f"data key {_KEY_PENDING}"
    print(
        f"{label}: revoked; {destroyed}, {len(notified)} link(s) no longer open"
        + (f"; {len(direct)} direct recipient(s) already have their copy" if direct else "")
        + _unsent_note(unsent)
    )
    return True


# Revoked, but another process's open read still holds the old pages with the wrapped key.
_KEY_PENDING = (
    "deleted (a copy stays in the store's write-ahead log while another process reads it: "
    "it is gone at the next checkpoint; `zivmilter maintenance` finishes it)"
)


def _unsent_replies(store: Store, message_id: str) -> int:
    """Secure replies to a message that were not delivered (the MTA has not taken them, or
    refused them): revoking the message drops them."""
    return len(store.unsent_replies(refused=True, message_id=message_id))


def _unsent_note(count: int) -> str:
    if not count:
        return ""
    return f"; {count} undelivered secure reply(ies) will not be sent"


def _recipient_status(store: Store, message: MessageRecord, r: RecipientRecord) -> dict[str, Any]:
    state = store.link_state(r.id)
    opened: str | None
    if r.delivery == "direct":
        method = f"direct ({r.level or '-'})"
        opened = _iso(message.created_at) + " (direct delivery: read when sent)"
    else:
        method = r.verification or r.method
        opened = _iso(r.opened_at) if r.opened_at else None
    revoked = state.revoked_at if state and state.revoked_at else message.revoked_at
    return {
        "recipient": r.address,
        "method": method,
        "rule": r.rule,
        "delivery": r.delivery,
        "notified": _iso(r.notified_at) if r.notified_at else None,
        "opened": opened,
        "failed_attempts": r.failed_attempts,
        # a lock that has ended is no lock: the next wrong code starts from the streak
        "locked_until": _iso(r.locked_until)
        if r.locked_until and r.locked_until > datetime.now(UTC)
        else None,
        "revoked": _iso(revoked) if revoked and r.delivery == "notification" else None,
        "replies": len(store.replies(r.id)),
    }


def cmd_status(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if args.keys:  # `status --keys`: what depends on which key (cli/keys.py)
        if args.message_id:
            raise MessageError("status: give a MESSAGE-ID or --keys, not both")
        from zivmilter.cli.keys import key_status

        return key_status(cfg, args.json)
    if not args.message_id:
        raise MessageError("status: give the MESSAGE-ID (or --keys)")
    store = open_store(cfg, read_only=True)
    try:
        found = _messages(store, args.message_id)
        report = []
        for message in found:
            report.append(
                {
                    "id": message.id,
                    "message_id": message.rfc822_id,
                    "sender": message.sender,
                    "stored": _iso(message.created_at),
                    "expires": _iso(message.expires_at) if message.expires_at else None,
                    "revoked": _iso(message.revoked_at) if message.revoked_at else None,
                    "recipients": [
                        _recipient_status(store, message, r) for r in store.recipients(message.id)
                    ],
                }
            )
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for m in report:
            _print_status(m)
    return 0 if found else 1


def _print_status(m: dict[str, Any]) -> None:
    head = f"message {m['id']}  Message-ID {m['message_id'] or '-'}  from {m['sender']}"
    print(head)
    extra = f"  stored {m['stored']}"
    if m["expires"]:
        extra += f", expires {m['expires']}"
    if m["revoked"]:
        extra += f", REVOKED {m['revoked']}"
    print(extra)
    for r in m["recipients"]:
        state = []
        if r["locked_until"]:
            state.append(f"locked until {r['locked_until']}")
        if r["revoked"]:
            state.append(f"revoked {r['revoked']}")
        if r["replies"]:
            state.append(f"{r['replies']} repl{'y' if r['replies'] == 1 else 'ies'}")
        print(
            f"  {r['recipient']}\n"
            f"    method {r['method']} (rule {r['rule']}), delivery {r['delivery']}\n"
            f"    notified {r['notified'] or '-'}, opened {r['opened'] or 'not yet'}, "
            f"failed attempts {r['failed_attempts']}"
            + (f"\n    {'; '.join(state)}" if state else "")
        )


# --- contacts ---------------------------------------------------------------------------------


def cmd_contacts(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    store = open_store(cfg, read_only=args.action == "list")
    try:
        if args.action == "forget":
            if not args.address:
                raise MessageError("contacts forget: give the ADDRESS to forget")
            # the browsers it remembered (issue 25) end with the entry, or without one
            forgotten = store.forget_contact(args.address)
            ended = store.forget_devices(args.address)
            if forgotten:
                print(f"{args.address}: forgotten")
            if ended:
                print(f"{args.address}: {_browsers(ended)} ended")
            if forgotten or ended:
                return 0
            print(f"{args.address}: not in the contact book", file=sys.stderr)
            return 1
        entries = store.contacts()
        devices = store.devices()
    finally:
        store.close()
    listed = {e.address for e in entries}
    # addresses with remembered browsers only (an emailed code leaves no contact entry)
    entries += [ContactEntry(a, None, False, None) for a in devices if a not in listed]
    for e in sorted(entries, key=lambda e: e.address):
        used = _iso(e.used_at) if e.used_at else "-"
        sms = mask_phone(e.sms) if e.sms else "-"
        code = "yes" if e.access_code else "no"
        line = f"{e.address}\tsms {sms}\taccess code {code}\tlast used {used}"
        if e.address in devices:
            line += f"\tremembered {_browsers(devices[e.address])}"
        if e.language:
            line += f"\tlanguage {e.language}"  # chosen in the portal (issue 25)
        print(line)
    return 0


def _browsers(n: int) -> str:
    return f"{n} browser{'' if n == 1 else 's'}"


def _iso(value: Any) -> str:
    return str(value.strftime("%Y-%m-%d %H:%M:%S UTC"))


def add_commands(sub: Any) -> None:
    p = sub.add_parser("portal", help="run the guest portal (web app)")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="worker processes (default: portal.workers)",
    )  # fmt: skip
    p.set_defaults(handler=cmd_portal)

    p = sub.add_parser("revoke", help="make a notification message unreadable")
    p.add_argument("message_id", metavar="MESSAGE-ID", help="Message-ID header or store id")
    p.add_argument("--recipient", metavar="ADDR", help="only this recipient's link")
    p.add_argument("--config", required=True, metavar="FILE")
    p.set_defaults(handler=cmd_revoke)

    p = sub.add_parser(
        "status", help="read status of a message, per recipient; or what depends on which key"
    )
    p.add_argument(
        "message_id", nargs="?", metavar="MESSAGE-ID", help="Message-ID header or store id"
    )
    p.add_argument(
        "--keys", action="store_true",
        help="instead: what each key-encryption key protects (exit 1 while an old one is needed)",
    )  # fmt: skip
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "contacts",
        help="the contact book and remembered browsers: list, or forget an address",
    )
    p.add_argument("action", choices=("list", "forget"))
    p.add_argument("address", nargs="?", metavar="ADDRESS")
    p.add_argument("--config", required=True, metavar="FILE")
    p.set_defaults(handler=cmd_contacts)
