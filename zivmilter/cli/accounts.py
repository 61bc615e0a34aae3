"""`zivmilter account add|enable|disable|list`: the accounts table of the store, for admins.

Sender accounts decide who may submit (submission.py: the From address must be an active sender
account). Recipient accounts (`--recipient`) are partners' portal logins (policy rule A1): they
are made by portal/accounts.py (argon2 password; the authenticator is enrolled at the first
sign-in), so that part needs the portal installed; so does `invite`, the one-time link with which
a sender sets up the sign-in to the portal's sent items. Each subcommand is a thin shell.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zivmilter.core import config as config_mod
from zivmilter.core.addresses import normalize_address
from zivmilter.errors import MessageError, StoreError
from zivmilter.store import Account, AccountStore, open_store


@contextmanager
def _store(args: argparse.Namespace, *, read_only: bool = False) -> Iterator[AccountStore]:
    store = open_store(config_mod.load(args.config), read_only=read_only)
    try:
        yield store
    finally:
        store.close()


def _address(text: str) -> str:
    try:
        return normalize_address(text)
    except MessageError as exc:
        raise MessageError(f"account: {exc}") from None


def _read_password(address: str) -> str:
    """Prompt twice on a terminal; read one line from a pipe (scripts, tests)."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise MessageError("account add --password: no password on standard input")
        return line
    first = getpass.getpass(f"Password for {address}: ")
    if not first:
        raise MessageError("account add --password: the password is empty")
    if getpass.getpass("Again: ") != first:
        raise MessageError("account add --password: the passwords differ")
    return first


def cmd_add(args: argparse.Namespace) -> int:
    address = _address(args.address)
    with _store(args) as store:
        if args.recipient:
            return _add_recipient(args, store, address)
        existing = store.account(address)
        if existing is not None:
            # Adding again would silently turn a recipient into a sender, or revive a
            # disabled sender: refuse, and point the way.
            state = "active" if existing.active else "disabled"
            raise StoreError(
                f"account {address} already exists ({existing.kind}, {state}); "
                f"use `zivmilter account enable` to switch it back on"
            )
        if args.password:
            raise MessageError(
                "account add: a sender account has no password here "
                "(senders authenticate with SMTP AUTH at the MTA; see submission.logins)"
            )
        store.add_account(address, "sender")
    print(f"{address}: sender account added, active")
    return 0


def _add_recipient(args: argparse.Namespace, store: AccountStore, address: str) -> int:
    try:
        from zivmilter.portal.accounts import add_recipient_account
    except ImportError as exc:
        raise StoreError(
            f"recipient accounts need the portal (pip install 'zivmilter[portal]'): {exc}"
        ) from None
    password = _read_password(address) if args.password else None
    try:
        made = add_recipient_account(store, address, password)
    except ValueError as exc:
        raise MessageError(f"account add: {exc}") from None
    print(f"{address}: recipient account ready, active; the authenticator is enrolled at sign-in")
    if made.password is not None:
        print(f"password (hand it to the recipient, it is not shown again): {made.password}")
    return 0


def _set_active(args: argparse.Namespace, active: bool) -> int:
    address = _address(args.address)
    with _store(args) as store:
        if not store.set_account_active(address, active):
            raise StoreError(f"account {address} does not exist")
    print(f"{address}: {'enabled' if active else 'disabled'}")
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    return _set_active(args, True)


def cmd_disable(args: argparse.Namespace) -> int:
    return _set_active(args, False)


def cmd_list(args: argparse.Namespace) -> int:
    with _store(args, read_only=True) as store:
        accounts: list[Account] = store.accounts()
    for a in accounts:
        flags = [a.kind, "active" if a.active else "disabled"]
        if a.password_hash:
            flags.append("password")
        if a.has_totp:
            flags.append("totp")
        print(f"{a.address}\t{' '.join(flags)}")
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    """A one-time link with which a sender sets the password and authenticator of their
    sign-in to the portal's sent items (`/sent/`): printed, or (--mail) mailed to them."""
    try:
        from zivmilter.portal.sentmail import invite_email, invite_url
    except ImportError as exc:
        raise StoreError(
            f"sender sign-in needs the portal (pip install 'zivmilter[portal]'): {exc}"
        ) from None
    from email.policy import SMTP

    from zivmilter import defaults
    from zivmilter.delivery.reinject import Outgoing, SmtpReinjector
    from zivmilter.portal.mail import portal_sender

    address = _address(args.address)
    cfg = config_mod.load(args.config)
    store = open_store(cfg)
    try:
        token = store.add_invite(address, defaults.SENDER_INVITE_SECONDS)
    finally:
        store.close()
    if token is None:
        raise StoreError(f"{address} has no active sender account (`zivmilter account add`)")
    days = defaults.SENDER_INVITE_SECONDS // 86400
    if not args.mail:
        print(f"{address}: invitation, valid once for {days} days (earlier ones no longer work):")
        print(invite_url(cfg, token))
        return 0
    org = cfg.organization
    msg = invite_email(cfg, address, token, days)
    mailer = SmtpReinjector(cfg.reinject.host, cfg.reinject.port, cfg.reinject.timeout)
    replies = mailer.send(
        [
            Outgoing(
                portal_sender(org.domains[0], org.mail_from),
                [address],
                msg.as_bytes(policy=SMTP),
                f"sender invitation to {address}",
            )
        ]
    )
    print(f"{address}: invitation mailed, valid once for {days} days ({'; '.join(replies)})")
    return 0


def add_commands(sub: Any) -> None:
    account = sub.add_parser("account", help="sender and recipient accounts in the store")
    commands = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, metavar="FILE")

    p = commands.add_parser(
        "add", help="add a sender account, or (--recipient) add or reset a portal account"
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--recipient",
        action="store_true",
        help="a recipient's portal account (rule A1), not a sender of this organization",
    )
    p.add_argument(
        "--password",
        action="store_true",
        help="recipient accounts: ask for the password (twice on a terminal, else one line of "
        "standard input) instead of generating one",
    )
    common(p)
    p.set_defaults(handler=cmd_add)

    p = commands.add_parser("enable", help="switch an account back on")
    p.add_argument("address", metavar="ADDRESS")
    common(p)
    p.set_defaults(handler=cmd_enable)

    p = commands.add_parser("disable", help="switch an account off (its mail is refused)")
    p.add_argument("address", metavar="ADDRESS")
    common(p)
    p.set_defaults(handler=cmd_disable)

    p = commands.add_parser(
        "invite", help="a one-time link to set up a sender's sign-in to the portal's sent items"
    )
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument(
        "--mail", action="store_true", help="mail the link to the sender instead of printing it"
    )
    common(p)
    p.set_defaults(handler=cmd_invite)

    p = commands.add_parser("list", help="every account: address, kind, state")
    common(p)
    p.set_defaults(handler=cmd_list)
