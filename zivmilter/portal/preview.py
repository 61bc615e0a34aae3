"""`zivmilter preview portal PAGE`: a portal page as a recipient will see it, rendered on sample
data with the configuration's brand and templates, without a store or a running portal.

The values are the ones the pages (links.py) give the same templates; check-config renders every
page here to find a site template that fails.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from zivmilter import defaults
from zivmilter.core.branding import DEFAULT_KEY
from zivmilter.core.config import Config
from zivmilter.portal.context import message_date, page_values, templates_for
from zivmilter.portal.i18n import texts
from zivmilter.portal.render import Attachment, MessageView

SAMPLE_SENDER = "Dr. A. Example <a.example@hospital.example>"
SAMPLE_SUBJECT = "Your results"


def _verify(method: str) -> Callable[[str], dict[str, Any]]:
    def values(lang: str) -> dict[str, Any]:
        return {
            "method": method,
            "sender": SAMPLE_SENDER,
            "subject": SAMPLE_SUBJECT,
            "hint": "the name of your first pet" if method == "access_code" else "",
            "phone": "+31 6•••••321",
            "address": "recipient@example.net",
            "locked_minutes": 0,
            "code_sent": method in ("sms", "email"),
            # "remember this browser" as policy.methods.remember_device_days would offer it
            "remember_days": 30 if method in ("sms", "email") else 0,
            "has_totp": method == "account",
            "csrf_send": "sample",
            "csrf_verify": "sample",
            "error": None,
            "notice": None,
            "fmt": {},
            "action": "/r/1/",
        }

    return values


def _message(lang: str) -> dict[str, Any]:
    view = MessageView(
        subject=SAMPLE_SUBJECT,
        sender=SAMPLE_SENDER,
        to="recipient@example.net",
        cc="",
        date="",
        message_id="<sample@hospital.example>",
        text="Dear recipient,\n\nYour results are attached.\n",
        html=None,
        attachments=(Attachment(1, "results.pdf", "application/pdf", 48_213),),
        inline={},
    )
    return {
        "view": view,
        "date": message_date(None, datetime(2025, 3, 4, 9, 30, tzinfo=UTC), lang),
        "remote": "",
        "csrf_remote": "sample",
        "has_remote": False,
        "replies": [],
        "csrf_reply": "sample",
        "csrf_logout": "sample",
        "replied": None,
        "error": None,
        "max_reply_mb": 10,
    }


def _notice(key: str, kind: str) -> Callable[[str], dict[str, Any]]:
    def values(lang: str) -> dict[str, Any]:
        t = texts(lang)
        return {"title": t[key + "_title"], "text": t[key + "_text"], "kind": kind}

    return values


# page name -> (template, sample values by language)
PAGES: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "verify-sms": ("verify.html", _verify("sms")),
    "verify-email": ("verify.html", _verify("email")),
    "verify-access-code": ("verify.html", _verify("access_code")),
    "verify-account": ("verify.html", _verify("account")),
    "message": ("message.html", _message),
    "signed-out": ("notice.html", _notice("signed_out", "info")),
    "not-found": ("notice.html", _notice("not_found", "error")),
}


def render_portal_page(cfg: Config, page: str, lang: str, unit: str = DEFAULT_KEY) -> str:
    """The HTML of a portal page on sample data, in `unit`'s brand."""
    template, sample = PAGES[page]
    root = urlsplit(cfg.portal.base_url).path.rstrip("/")
    values = {**page_values(cfg.brands[unit], lang, root, root + "/r/1/"), **sample(lang)}
    return templates_for(cfg.branding.templates).get_template(template).render(values)


def template_problems(cfg: Config) -> list[str]:
    """Portal pages that fail to render on sample data (a site template with an error)."""
    problems: list[str] = []
    for page, (template, _sample) in PAGES.items():
        for lang in defaults.LANGUAGES:
            for unit in cfg.brands:
                try:
                    render_portal_page(cfg, page, lang, unit)
                except Exception as exc:  # a site's template can fail in any way
                    where = getattr(exc, "filename", None) or template
                    line = getattr(exc, "lineno", None)
                    at = f", line {line}" if line else ""
                    problem = f"{where}{at}: page {page!r} cannot be rendered ({exc})"
                    if problem not in problems:
                        problems.append(problem)
    return problems
