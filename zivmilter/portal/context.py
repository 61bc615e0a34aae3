"""What every page of the portal shares: the `Portal` (configuration, store, keys, senders, the
templates) with its page, cookie and form helpers, and the filters the templates use.

app.py wires the routes; the pages (pages.py, links.py, downloads.py) and the steps they share
(flows.py) import this module, never app.py, so the portal's modules import one way.
"""

from __future__ import annotations

import email.utils
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from zivmilter import defaults, i18n
from zivmilter.core.branding import Brand
from zivmilter.core.config import Config
from zivmilter.delivery.reinject import Reinjector
from zivmilter.mail.notification import domain_language
from zivmilter.portal.i18n import DATE_FORMAT, DATE_PATTERN, LANGUAGE_NAMES, minutes, texts
from zivmilter.portal.security import (
    Pass,
    PortalKeys,
    Stage,
    cookie_name,
    csrf_ok,
    csrf_token,
    decode_pass,
    subject_of,
)
from zivmilter.portal.security import encode_pass as _encode
from zivmilter.portal.sms import SmsSender
from zivmilter.store import Store

_HERE = Path(__file__).parent
LANG_COOKIE = "zv_lang"
_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class Portal:
    """Everything the pages need; built once per process by `asgi.build_portal` (or a test)."""

    cfg: Config
    store: Store
    keys: PortalKeys
    sms: SmsSender
    mailer: Reinjector  # the portal's own mail (codes): the milter-free listener
    # secure replies: a listener with the site's content filters (reinject.replies_port);
    # None: `mailer` (tests that need not tell the two apart)
    reply_mailer: Reinjector | None = None
    clock: Callable[[], float] = time.time
    templates: jinja2.Environment = field(init=False)
    root: str = field(init=False)  # path prefix of portal.base_url, without the final "/"
    origin: str = field(init=False)
    secure: bool = field(init=False)  # cookies get `Secure` when the site is https
    _limiter: anyio.CapacityLimiter | None = field(init=False, default=None)  # see `run`

    def __post_init__(self) -> None:
        url = urlsplit(self.cfg.portal.base_url)
        self.root = url.path.rstrip("/")
        self.origin = f"{url.scheme}://{url.netloc}"
        self.secure = url.scheme == "https"
        self.templates = _templates(self.cfg.branding.templates)

    @property
    def replies(self) -> Reinjector:
        """Where secure replies are handed over."""
        return self.reply_mailer or self.mailer

    @property
    def org_name(self) -> str:
        return self.cfg.organization.name

    @property
    def org_domain(self) -> str:
        return self.cfg.organization.domains[0]

    def now(self) -> float:
        return self.clock()

    async def run(self, func: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """A page's blocking half (store, templates) in the thread pool, in one hop, its store
        calls on one connection (`Store.request_scope`: PostgreSQL takes one from its pool for
        the request, not one per call). For the pages that read and record; a form that waits
        on SMS, SMTP or a password hash between its store calls uses `run_in_threadpool`, so
        that a slow provider does not hold connections the views need.

        On PostgreSQL no more of these run at once than the pool has connections: the others
        wait on the event loop, not in threads that would queue for a connection (each handed
        on costs a thread wake-up and a GIL hand-over: an eighth of the CPU of a view when 25
        requests were in flight on a pool of 10)."""
        store = self.store

        def scoped() -> _R:
            with store.request_scope():
                return func(*args, **kwargs)

        return await anyio.to_thread.run_sync(scoped, limiter=self._scope_limiter())

    def _scope_limiter(self) -> anyio.CapacityLimiter | None:
        """The pool's size in threads on PostgreSQL; anyio's default limiter (40) on SQLite."""
        if self._limiter is None and self.cfg.store.backend == "postgresql":
            self._limiter = anyio.CapacityLimiter(self.cfg.store.pool_size)
        return self._limiter

    # -- branding --------------------------------------------------------------------------

    def brand(self, request: Request) -> Brand:
        """The brand of the page: of the message's author when the page belongs to a message
        (`remember_sender`), else the organization's."""
        sender: str | None = getattr(request.state, "brand_sender", None)
        return self.cfg.brand_for(sender)

    @staticmethod
    def remember_sender(request: Request, sender: str) -> None:
        """The page's message is from `sender`: its pages carry the sender's unit's brand."""
        request.state.brand_sender = sender

    # -- languages -------------------------------------------------------------------------

    def language(
        self,
        request: Request,
        address: str | None = None,
        *,
        booked: str | Literal[False] | None = False,
    ) -> str:
        """The page's language: the visitor's choice (?lang=, a switch on the page; then the
        cookie it set), else the one the address chose before (the contact book), else its
        domain's (notification.languages), else the browser's (Accept-Language), else
        notification.language.

        `booked`: the contact book's language of `address` where the caller read it already
        (`LinkView.language`; None: it chose none), so it is not read again; False: read it."""
        chosen = self.chosen_language(request)
        if chosen is not None:
            return chosen
        if address:
            if booked is False:
                contact = self.store.contact(address)
                booked = None if contact is None else contact.language
            if booked and booked in defaults.LANGUAGES:
                return booked
            by_domain = domain_language(address, self.cfg.notification)
            if by_domain is not None:
                return by_domain
        return browser_language(request.headers.get("accept-language", "")) or (
            self.cfg.notification.language
        )

    @staticmethod
    def chosen_language(request: Request, switched_only: bool = False) -> str | None:
        """The language the visitor chose with the switch: ?lang=, then (unless
        `switched_only`) the cookie an earlier switch set; None when they chose none."""
        asked = request.query_params.get("lang")
        if asked in defaults.LANGUAGES:
            return asked
        saved = None if switched_only else request.cookies.get(LANG_COOKIE)
        return saved if saved in defaults.LANGUAGES else None

    def remember_language(self, request: Request, address: str, switched_only: bool) -> None:
        """The recipient of `address` proved who they are: the language they chose on the
        way, if any, is theirs for the next notification (the contact book, issue 25)."""
        chosen = self.chosen_language(request, switched_only)
        if chosen is not None:
            contact = self.store.contact(address)
            if contact is None or contact.language != chosen:
                self.store.remember_language(address, chosen)

    # -- pages -----------------------------------------------------------------------------

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        lang: str,
        here: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        zone = self.cfg.organization.timezone
        values = {**page_values(self.brand(request), lang, self.root, here, zone), **context}
        html = self.templates.get_template(template).render(values)
        response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
        if request.query_params.get("lang") == lang:
            self.set_cookie(response, LANG_COOKIE, lang, max_age=365 * 24 * 3600)
        return response

    def notice(
        self,
        request: Request,
        key: str,
        *,
        lang: str,
        here: str,
        status: int,
        kind: str = "info",
        **fmt: str,
    ) -> HTMLResponse:
        """A page with one message from the catalogue: `<key>_title` and `<key>_text`."""
        t = texts(lang)
        return self.page(
            request,
            "notice.html",
            {
                "title": t[key + "_title"],
                "text": t[key + "_text"].format(**fmt),
                "kind": kind,
            },
            lang=lang,
            here=here,
            status=status,
        )

    # -- cookies ---------------------------------------------------------------------------

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.root + "/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def get_pass(self, request: Request, scope: str) -> Pass | None:
        """The request's pass for `scope`: genuine, unexpired, and of a session that was not
        ended since (sign-out, a disabled account: checked in the store on every request)."""
        p = self.read_pass(request, scope)
        if p is not None and p.subject and self.store.session_generation(p.subject) != p.gen:
            return None
        return p

    def read_pass(self, request: Request, scope: str) -> Pass | None:
        """The first half of `get_pass`, without the store: genuine, for `scope`, unexpired. A
        caller that reads the session generation with other rows compares `p.gen` itself."""
        return decode_pass(self.keys, request.cookies.get(cookie_name(scope)), scope, self.now())

    def give_pass(self, response: Response, p: Pass) -> None:
        max_age = max(1, p.expires - int(self.now()))
        self.set_cookie(response, cookie_name(p.scope), _encode(self.keys, p), max_age)

    def new_pass(self, scope: str, stage: Stage, who: int = 0) -> Pass:
        lifetime = (
            self.cfg.portal.session_seconds
            if stage is Stage.VERIFIED
            else defaults.PORTAL_LINK_SECONDS
        )
        subject = subject_of(scope, who)
        gen = (self.store.session_generation(subject) or 0) if subject else 0
        return Pass.new(scope, stage, self.now(), lifetime, who, gen)

    def drop_pass(self, response: Response, scope: str) -> None:
        response.delete_cookie(
            cookie_name(scope),
            path=self.root + "/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    # -- forms -----------------------------------------------------------------------------

    def csrf(self, p: Pass, form: str) -> str:
        return csrf_token(self.keys, p, form)

    def form_allowed(self, request: Request, p: Pass, form: str, token: str | None) -> bool:
        """CSRF: the token of this cookie and form, and (when the browser says) our origin."""
        return self.origin_allowed(request) and csrf_ok(self.keys, p, form, token)

    def origin_allowed(self, request: Request) -> bool:
        """The half of the CSRF check that the headers carry (`form_allowed` is both)."""
        origin = request.headers.get("origin")
        # "null" comes from privacy settings as well as from sandboxed pages: the token decides.
        return origin is None or origin in (self.origin, "null")


@functools.cache
def _templates(folder: str | None = None) -> jinja2.Environment:
    """The page templates, compiled once per process and shared by every `Portal` in it: they
    do not change while it runs. The site's folder (branding.templates) comes first. `_()` and
    `{% trans %}` speak the page's `lang` (zivmilter/i18n.py); so do the filters."""
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(_HERE / "templates"))]
    if folder is not None:
        loaders.insert(0, jinja2.FileSystemLoader(folder))
    templates = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(("html",), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # No stat() of the template files on every page: they do not change while it runs.
        auto_reload=False,
    )
    i18n.install_gettext(templates)
    templates.filters["filesize"] = _filesize
    templates.filters["when"] = _when
    templates.filters["minutes"] = lambda n, language: minutes(language, int(n))
    return templates


def page_values(
    brand: Brand, lang: str, root: str, here: str, zone: str = defaults.TIMEZONE
) -> dict[str, Any]:
    """What every page template knows, besides its own values."""
    return {
        "t": texts(lang),
        "lang": lang,
        "languages": LANGUAGE_NAMES,
        "org_name": brand.name,
        "brand": brand,
        "root": root,
        "static": root + "/static",
        "here": here,
        "zone": zone,  # organization.timezone: the dates the page shows (`when`)
    }


def templates_for(folder: str | None) -> jinja2.Environment:
    """The page templates with a site's folder first (preview, check-config)."""
    return _templates(folder)


def message_date(header: str | None, received: datetime | None, lang: str) -> str:
    """A message's Date header written out in the page's language, in the sender's own time
    (with its offset); when it cannot be read, the header as it is; without one, when the
    gateway received the message."""
    when: datetime | None = received.astimezone(UTC) if received is not None else None
    if header:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return header
    if when is None:
        return ""
    if when.tzinfo is None:  # "-0000": the sender did not say its zone
        when = when.replace(tzinfo=UTC)
    t = i18n.translations(lang)
    offset = when.strftime("%z")
    return t.gettext(DATE_FORMAT).format(
        date=i18n.format_long_date(when, lang, t.gettext(DATE_PATTERN)),
        time=when.strftime("%H:%M"),
        offset=f"{offset[:3]}:{offset[3:]}" if offset else "",
    )


def browser_language(header: str) -> str | None:
    """The first of the portal's languages in an Accept-Language header, by the browser's
    weights (RFC 9110 12.5.4); a regional tag counts for its language (`de-AT`: de)."""
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(header.split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        language = tag.strip().lower().split("-")[0]
        if weight > 0 and language in defaults.LANGUAGES:
            ranked.append((-weight, i, language))
    return min(ranked)[2] if ranked else None


def timestamp(dt: datetime | None, lang: str = "en", zone: str = defaults.TIMEZONE) -> str:
    """A moment as the language writes it, in the organization's zone (organization.timezone)."""
    return "" if dt is None else i18n.format_timestamp(dt, lang, zone)


@jinja2.pass_context
def _when(context: jinja2.runtime.Context, value: datetime | None) -> str:
    return timestamp(value, context.get("lang", "en"), context.get("zone", defaults.TIMEZONE))


@jinja2.pass_context
def _filesize(context: jinja2.runtime.Context, size: int) -> str:
    return i18n.format_size(size, context.get("lang", "en"))


def trusted_markup(html: str) -> Markup:
    """Mark HTML as safe for the templates: only for what we generated (the QR code's SVG) or
    what nh3 sanitized (render.sanitize_html), never for input as it came."""
    return Markup(html)
