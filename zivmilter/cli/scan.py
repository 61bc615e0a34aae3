"""`zivmilter scan FILE.eml`: the content rules (`selection.content`) alone, for admins tuning
their patterns: which rule matched where, masked as explain and the log show it.

Whatever `selection.mode` says, every configured content rule runs. Exit status 0 when a rule
matched, 1 when none did (as grep), 2 for a bad config or an unreadable message.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from zivmilter import defaults
from zivmilter.core import config as config_mod
from zivmilter.core import limits
from zivmilter.core.bodytext import parts_of_message
from zivmilter.core.explain import match_json, match_text
from zivmilter.core.message import read_headers
from zivmilter.core.selection import select
from zivmilter.errors import MessageError


def cmd_scan(args: argparse.Namespace) -> int:
    from zivmilter.cli import _attachment_text, read_file

    cfg = config_mod.load(args.config)
    content = cfg.selection.content
    if not content.active:
        raise MessageError(
            f"{cfg.source}: no content rule is on (selection.content: bsn, iban, payment_card,"
            " patterns; and a scope)"
        )
    data = read_file(args.message)
    try:
        headers = read_headers(data)
    except MessageError as exc:
        raise MessageError(f"{args.message}: {exc}") from None
    nesting = defaults.MIME_NESTING_LIMIT
    if limits.deeper_than(io.BytesIO(data), nesting):  # the milter reads none of it
        raise MessageError(f"{args.message}: {limits.too_deep(nesting)}")
    # selection's own path: the subject as it reads it, and matches reported in either mode
    parts = parts_of_message(data, content.scope) + _attachment_text(data, cfg)
    matches = select(cfg.selection, headers, "", parts).matches
    if args.json:
        out: dict[str, Any] = {"matches": [match_json(m) for m in matches]}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif matches:
        for m in matches:
            print(match_text(m))
    else:
        print("no content rule matched")
    return 0 if matches else 1


def add_commands(sub: Any) -> None:
    p = sub.add_parser("scan", help="run the content rules (selection.content) on one message")
    p.add_argument("message", metavar="FILE.eml")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--json", action="store_true", help='print {"matches": [...]}')
    p.set_defaults(handler=cmd_scan)
