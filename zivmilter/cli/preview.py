"""`zivmilter preview notification|portal PAGE`: the HTML a recipient will see, on sample data,
in the configuration's brand (and a unit's, with --unit) and templates."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zivmilter import defaults
from zivmilter.core import config as config_mod
from zivmilter.core.branding import DEFAULT_KEY
from zivmilter.errors import ConfigError, ZivmilterError
from zivmilter.mail import notification


def cmd_preview(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    unit = args.unit or DEFAULT_KEY
    if unit not in cfg.brands:
        known = ", ".join(k for k in cfg.brands if k != DEFAULT_KEY) or "none"
        raise ConfigError(cfg.source, "branding.units", f"no unit {unit!r} (units: {known})")
    if args.what == "notification":
        kind = args.page or "email"
        if kind not in notification.KINDS:
            raise ZivmilterError(
                f"preview notification: {kind!r} is not one of {', '.join(notification.KINDS)}"
            )
        values = notification.sample_values(cfg, cfg.brands[unit], args.lang, kind)
        text, html = notification.render_texts(values, args.lang, cfg.branding.templates)
        out = text if args.text else html
    else:
        from zivmilter.portal.preview import PAGES, render_portal_page

        if args.page not in PAGES:
            raise ZivmilterError(f"preview portal: PAGE is one of {', '.join(PAGES)}")
        out = render_portal_page(cfg, args.page, args.lang, unit)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(out)
    else:
        sys.stdout.write(out)
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "preview",
        help="write the HTML of a notification or a portal page as a recipient will see it",
        description=(
            "notification [KIND]: KIND is the verification (account, sms, access_code, email;"
            " default email). portal PAGE: verify-sms, verify-email, verify-access-code,"
            " verify-account, message, signed-out, not-found. Sample data, the configuration's"
            " brand and templates."
        ),
    )
    p.add_argument("what", choices=("notification", "portal"))
    p.add_argument("page", nargs="?", metavar="PAGE")
    p.add_argument("--lang", choices=defaults.LANGUAGES, default=defaults.NOTIFICATION_LANGUAGE)
    p.add_argument("--unit", metavar="U", help="a unit of branding.units (default: none)")
    p.add_argument("--text", action="store_true", help="notification: the plain-text part")
    p.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--config", required=True, metavar="FILE")
    p.set_defaults(handler=cmd_preview)
