"""The `zivmilter` command: one subcommand per job, each a thin shell over a module.

Every expected failure (bad config, unreadable message, bad address) is one clear line on stderr
and exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import io
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from zivmilter import __version__, defaults
from zivmilter.cli import runas
from zivmilter.core import config as config_mod
from zivmilter.core import submission
from zivmilter.core.facts import StaticFacts, load_facts
from zivmilter.errors import ConfigError, MessageError, ZivmilterError

if TYPE_CHECKING:
    from zivmilter.core.content import Part
    from zivmilter.core.keys import KeyFinder

Handler = Callable[[argparse.Namespace], int]

# Modules that register further subcommands: `add_commands(subparsers)`; optional ones may be
# absent from a slim install (the milter needs libmilter, the portal its web stack).
_COMMAND_MODULES = (
    "zivmilter.cli.run",
    "zivmilter.cli.accounts",
    "zivmilter.cli.maintenance",
    "zivmilter.cli.transport",
    "zivmilter.cli.portal",
    "zivmilter.cli.dns",
    "zivmilter.cli.scan",
    "zivmilter.cli.store",
    "zivmilter.cli.doctor",
    "zivmilter.cli.audit",
    "zivmilter.cli.keys",
    "zivmilter.cli.recipientkeys",
    "zivmilter.cli.preview",
)


def read_file(path: str) -> bytes:
    """A file named on the command line, whole; an unreadable one is a clear error."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise MessageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def cmd_explain(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    facts = load_facts(args.facts) if args.facts else StaticFacts()
    with contextlib.ExitStack() as stack:
        keys, note = _store_keys(cfg, args, stack)
        return _explain(args, cfg, facts, keys, note)


def _explain(
    args: argparse.Namespace,
    cfg: config_mod.Config,
    facts: StaticFacts,
    keys: KeyFinder | None,
    note: str,
) -> int:
    from zivmilter.core.assess import assess
    from zivmilter.core.bodytext import parts_of_message
    from zivmilter.core.explain import render_text, to_json
    from zivmilter.core.facts import Facts, KeyedFacts
    from zivmilter.core.message import addresses, read_headers

    data = read_file(args.message)
    try:
        headers = read_headers(data)
    except MessageError as exc:
        raise MessageError(f"{args.message}: {exc}") from None
    refused = _refusal(data, cfg)
    if refused is not None:  # the milter refuses it before anything else: no decision to show
        from zivmilter.core.explain import refusal_json, render_refusal

        if args.json:
            print(json.dumps(refusal_json(*refused), indent=2, ensure_ascii=False))
        else:
            print(render_refusal(*refused))
        return 0
    rcpts = args.rcpt or addresses(headers, "To", "Cc", "Bcc")
    if not rcpts:
        raise MessageError(f"{args.message}: no recipients: give --rcpt or add To/Cc/Bcc headers")
    sender = args.sender
    if sender is None:
        found = addresses(headers, "From")
        sender = found[0] if found else ""
    content = cfg.selection.content
    parts = parts_of_message(data, content.scope) if content.active else []
    parts += _attachment_text(data, cfg)
    decided_on: Facts = facts if keys is None else KeyedFacts(facts, keys)
    result = assess(
        headers, sender, rcpts, cfg, decided_on, parts, _wire_bytes(data), _text_bytes(data, cfg)
    )
    verdict = _explain_submission(args, cfg, headers, sender, facts)
    if args.json:
        out = to_json(result, verdict)
        if note:
            out["keys"] = note
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(render_text(result, verdict) + (f"\n\nKeys: {note}" if note else ""))
    return 0


def _store_keys(
    cfg: config_mod.Config, args: argparse.Namespace, stack: contextlib.ExitStack
) -> tuple[KeyFinder | None, str]:
    """The organization's key store as the milter reads it (keys/wiring.py), for `explain`
    without --facts and with `encryption.enabled`; and a line on where keys were looked for.
    Only read: a store that does not exist yet is not made (its keys are none), and the
    network sources (WKD, OPENPGPKEY, SMIMEA) are not asked (pin them in a facts file)."""
    if args.facts or not cfg.encryption.enabled:
        return None, ""
    from zivmilter.core.keys import KeySource
    from zivmilter.store.sqlite.schema import DB_NAME

    if KeySource.KEYSTORE not in cfg.encryption.sources:
        return None, "the key store is not in encryption.sources; " + _NOT_ASKED
    if cfg.store.backend == "sqlite" and not os.path.exists(os.path.join(cfg.store.path, DB_NAME)):
        return None, f"no store at {cfg.store.path} yet, so no imported keys; " + _NOT_ASKED
    from zivmilter.keys.wiring import key_finder
    from zivmilter.store import open_store

    # Read-only: answers while the milter holds a write transaction, and makes nothing.
    store = stack.enter_context(contextlib.closing(open_store(cfg, read_only=True)))
    where = cfg.store.path if cfg.store.backend == "sqlite" else "PostgreSQL"
    note = f"the organization's key store ({where}); {_NOT_ASKED}"
    return key_finder(cfg, store, discovered={}), note


_NOT_ASKED = "WKD, OPENPGPKEY and SMIMEA are not asked by explain (pin them with --facts)"


def _wire_bytes(data: bytes) -> int:
    """The message's size as the MTA would pass it to the milter: every line ending CRLF (a
    file saved with bare LF is that much shorter; the MTA's own trace fields not counted)."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def _refusal(data: bytes, cfg: config_mod.Config) -> tuple[str, str] | None:
    """(reply, why) when the milter refuses the message before deciding anything (limits.py)."""
    from zivmilter.core import limits

    size, limit = _wire_bytes(data), cfg.milter.max_message_bytes
    if size > limit:
        why = (
            f"the message is {size} bytes as the MTA passes it, over milter.max_message_bytes"
            f" ({limit}); refused at MAIL FROM when the client declares its SIZE=, else at the"
            " end of data"
        )
        return limits.too_big(limit), why
    nesting = defaults.MIME_NESTING_LIMIT
    if limits.deeper_than(io.BytesIO(data), nesting):
        why = (
            f"its MIME parts (multipart, message/*) nest deeper than {nesting} levels; refused"
            " before anything reads them, at the end of data"
        )
        return limits.too_deep(nesting), why
    return None


def _text_bytes(data: bytes, cfg: config_mod.Config) -> int:
    """The text a PDF of the message lays out, counted as the milter counts it: with
    encryption.pdf on, and the message not already over encryption.pdf_max_bytes."""
    from zivmilter.core.bodytext import pdf_text_bytes_of_message

    if not cfg.encryption.pdf or _wire_bytes(data) > cfg.encryption.pdf_max_bytes:
        return 0
    return pdf_text_bytes_of_message(data)


def _attachment_text(data: bytes, cfg: config_mod.Config) -> list[Part]:
    """The attachments' text as the milter reads it (scope attachment_text); an attachment that
    could not be read is said on stderr, as the milter logs it."""
    from zivmilter.gateway.attachtext import attachment_parts

    found, problems = attachment_parts(data, cfg.selection.content)
    for problem in problems:
        print(f"zivmilter: {problem}", file=sys.stderr)
    return found


def _explain_submission(
    args: argparse.Namespace,
    cfg: config_mod.Config,
    headers: list[tuple[str, str]],
    sender: str,
    facts: StaticFacts,
) -> submission.SubmissionResult:
    """The milter's submission check, with the client and login from the command line.

    Without --client-ip the client is taken to be local (127.0.0.1) and SPF is not looked up;
    with it, SPF is a live DNS lookup, as the milter would do it.
    """
    spf: submission.SpfChecker
    if args.client_ip is None:
        spf = submission.NoSpf("SPF not checked: no --client-ip given")
        client = defaults.LOCAL_CLIENT_ADDRESS
    else:
        client = args.client_ip
        try:
            ipaddress.ip_address(client)
        except ValueError:
            raise MessageError(f"--client-ip: {client!r} is not an IP address") from None
        try:
            from zivmilter.transport.spf import PySpfChecker
        except ImportError:
            spf = submission.NoSpf("SPF not checked: pyspf is not installed")
        else:
            spf = PySpfChecker.from_config(cfg)
    verdict = submission.check(
        cfg,
        headers,
        client_ip=client,
        auth_login=args.auth,
        envelope_sender=sender,
        spf=spf,
        accounts=facts,
        rules=submission.rules_for(cfg, args.listener),
    )
    if args.client_ip is None:
        note = f"no --client-ip given: assumed a local client ({client})"
        verdict = dataclasses.replace(verdict, reason=f"{note}; {verdict.reason}")
    return verdict


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.file)
    _check_templates(cfg)
    print(
        f"{cfg.source}: ok ({cfg.organization.name}; domains {', '.join(cfg.organization.domains)})"
    )
    return 0


def _check_templates(cfg: config_mod.Config) -> None:
    """Every notification template and portal page rendered on sample data, in every brand:
    a ConfigError names the template (branding.templates, or the shipped ones)."""
    from zivmilter.mail.notification import template_problems

    key = "branding.templates" if cfg.branding.templates else "branding"
    problems = template_problems(cfg)
    try:
        from zivmilter.portal import preview
    except ImportError:  # a slim install without the portal's web stack
        pass
    else:
        problems += preview.template_problems(cfg)
    if problems:
        raise ConfigError(cfg.source, key, "; ".join(problems))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zivmilter", description="Secure outbound mail gateway (milter)."
    )
    parser.add_argument("--version", action="version", version=f"zivmilter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("explain", help="dry run: what would happen to each recipient, and why")
    p.add_argument("message", metavar="MESSAGE.eml")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--facts", metavar="FILE", help="YAML facts file (accounts, levels, ...)")
    p.add_argument("--from", dest="sender", metavar="ADDR", help="envelope sender (default: From)")
    p.add_argument(
        "--rcpt",
        action="extend",
        nargs="+",
        metavar="ADDR",
        help="envelope recipient, repeatable (default: To/Cc/Bcc addresses)",
    )
    p.add_argument(
        "--client-ip",
        metavar="IP",
        help="SMTP client address for the submission check (default: a local client, no SPF)",
    )
    p.add_argument("--auth", metavar="LOGIN", help="SMTP AUTH login of the client ({auth_authen})")
    p.add_argument(
        "--listener",
        metavar="NAME",
        help="MTA listener ({daemon_name}) whose submission.listeners rules apply",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=cmd_check_config)

    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if (
                name == missing
                or name.startswith(missing + ".")
                or not missing.startswith("zivmilter")
            ):
                continue  # that part (or its optional dependency) is not installed
            raise
        module.add_commands(sub)
    return parser


# Commands that open (and so may create or write) the store named by their --config; probe's
# cache is a file in the store's folder.
_STORE_COMMANDS = frozenset(
    "run portal account idd maintenance odd-refresh revoke status contacts probe rekey keys"  # noqa: SIM905
    " store".split()
)

# Of those, the ones that only read the store (their action; None: all of them): they open it
# read-only, `open_store(cfg, read_only=True)`, so root may run them on the service user's store
# (runas.py says why). `explain` is not a store command: it reads the store read-only, or not.
_READS_ONLY: dict[str, frozenset[str] | None] = {
    "status": None,  # a message's status, and --keys
    "account": frozenset({"list"}),
    "idd": frozenset({"list"}),
    "contacts": frozenset({"list"}),
    "keys": frozenset({"list", "show"}),
}


def _reads_only(args: argparse.Namespace) -> bool:
    """Whether the command opens the store only read-only (`_READS_ONLY`)."""
    if args.command not in _READS_ONLY:
        return False
    actions = _READS_ONLY[args.command]
    action = args.account_command if args.command == "account" else getattr(args, "action", None)
    return actions is None or action in actions


def _check_store_user(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """As root, refuse to write the service user's store (runas.py names the runuser command)."""
    if args.command not in _STORE_COMMANDS or _reads_only(args):
        return
    if args.command == "store" and args.store_command == "copy":
        paths = [args.source, args.destination]  # the copy writes both (SQLite: locks, files)
    else:
        paths = [args.config]
    if args.command == "probe":
        if args.no_cache:
            return  # the cache is the only part of the store probe touches
        if paths == [None] and os.path.exists(defaults.CONFIG_FILE):
            paths = [defaults.CONFIG_FILE]
    for path in paths:
        if path is not None:
            cfg = config_mod.load(path)
            runas.check_store_user(cfg.store.path, cfg.store.key_file, argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Built per call, not cached: a `zivmilter` process calls main once. The first build's
    # second or so is importing the command modules, which happens once per process anyway;
    # building it again costs ~10 ms (`python -m timeit -s "from zivmilter import cli;
    # cli.build_parser()" "cli.build_parser()"`), paid only by tests calling main in-process.
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        _check_store_user(args, argv)
        return handler(args)
    except ZivmilterError as exc:
        print(f"zivmilter: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
