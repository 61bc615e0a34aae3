"""The portal's ASGI application: shared wiring, security headers, cookies, CSRF, languages.

`create_app(portal)` builds the Starlette app; the pages live in links.py (personal links: verify,
read, reply) and downloads.py (large attachments of direct deliveries), on what pages.py gives
both. The only state is the store and signed cookies (security.py), so several instances can
serve one site. Blocking work (SQLite, scrypt, argon2, SMTP, SMS) runs in Starlette's thread
pool, never on the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zivmilter import defaults, metrics
from zivmilter.core.config import Config
from zivmilter.delivery.reinject import Reinjector
from zivmilter.mail.notification import language_for
from zivmilter.portal.i18n import LANGUAGE_NAMES, texts
from zivmilter.portal.security import (
    Pass,
    PortalKeys,
    Stage,
    cookie_name,
    csrf_ok,
    csrf_token,
    decode_pass,
)
from zivmilter.portal.security import encode_pass as _encode
from zivmilter.portal.sms import SmsSender
from zivmilter.store import Store

log = logging.getLogger("zivmilter.portal")

_HERE = Path(__file__).parent
LANG_COOKIE = "zv_lang"

# Pages: nothing loads from elsewhere, no script at all, forms only to us, frames only ours.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": PAGE_CSP,
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium sends `Origin: null` on our own
    # forms, and the origin check below needs the real one. Other sites never get a Referer.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "cache-control": "no-store",
}


@dataclass
class Portal:
    """Everything the pages need; built once per process by `commands.py` (or a test)."""

    cfg: Config
    store: Store
    keys: PortalKeys
    sms: SmsSender
    mailer: Reinjector
    clock: Callable[[], float] = time.time
    templates: jinja2.Environment = field(init=False)
    root: str = field(init=False)  # path prefix of portal.base_url, without the final "/"
    origin: str = field(init=False)
    secure: bool = field(init=False)  # cookies get `Secure` when the site is https

    def __post_init__(self) -> None:
        url = urlsplit(self.cfg.portal.base_url)
        self.root = url.path.rstrip("/")
        self.origin = f"{url.scheme}://{url.netloc}"
        self.secure = url.scheme == "https"
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(_HERE / "templates")),
            autoescape=jinja2.select_autoescape(("html",), default=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["filesize"] = _filesize
        self.templates.filters["when"] = _when

    @property
    def org_name(self) -> str:
        return self.cfg.organization.name

    @property
    def org_domain(self) -> str:
        return self.cfg.organization.domains[0]

    def now(self) -> float:
        return self.clock()

    # -- languages -------------------------------------------------------------------------

    def language(self, request: Request, address: str | None = None) -> str:
        """?lang= (a switch on the page), then the cookie it set, then the notification's."""
        asked = request.query_params.get("lang")
        if asked in defaults.LANGUAGES:
            return asked
        saved = request.cookies.get(LANG_COOKIE)
        if saved in defaults.LANGUAGES:
            return saved
        if address:
            return language_for(address, self.cfg.notification)
        return self.cfg.notification.language

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
        values = {
            "t": texts(lang),
            "lang": lang,
            "languages": LANGUAGE_NAMES,
            "org_name": self.org_name,
            "root": self.root,
            "static": self.root + "/static",
            "here": here,
            **context,
        }
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
        return Pass.new(scope, stage, self.now(), lifetime, who)

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
        origin = request.headers.get("origin")
        # "null" comes from privacy settings as well as from sandboxed pages: the token decides.
        if origin is not None and origin not in (self.origin, "null"):
            return False
        return csrf_ok(self.keys, p, form, token)


def timestamp(dt: datetime | None) -> str:
    return "" if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _when(value: datetime | None) -> str:
    return timestamp(value)


def _filesize(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    for unit in ("KB", "MB", "GB"):
        size_f = size / 1024
        if size_f < 1024 or unit == "GB":
            return f"{size_f:.1f} {unit}"
        size = int(size_f)
    return f"{size} B"  # pragma: no cover


class SecurityHeaders:
    """Adds the default security headers to every response that does not set its own."""

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.defaults = dict(_SECURITY_HEADERS)
        if hsts:
            self.defaults["strict-transport-security"] = "max-age=31536000"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.defaults.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Static(StaticFiles):
    """The stylesheet may be cached (it is public and versioned with the package)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=3600"
        return response


def create_app(portal: Portal, on_ready: Callable[[], object] | None = None) -> Starlette:
    from zivmilter.portal.downloads import DownloadPages
    from zivmilter.portal.links import LinkPages

    links = LinkPages(portal)
    downloads = DownloadPages(portal)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/m/{token}", links.open_link, methods=["GET"]),
        Route("/r/{rid:int}/", links.view, methods=["GET"]),
        Route("/r/{rid:int}/send", links.send_code, methods=["POST"]),
        Route("/r/{rid:int}/verify", links.verify, methods=["POST"]),
        Route("/r/{rid:int}/enrol", links.enrol, methods=["POST"]),
        Route("/r/{rid:int}/body", links.body, methods=["GET"]),
        Route("/r/{rid:int}/part/{index:int}", links.inline_part, methods=["GET"]),
        Route("/r/{rid:int}/attachment/{index:int}", links.attachment, methods=["GET"]),
        Route("/r/{rid:int}/reply", links.reply, methods=["POST"]),
        Route("/r/{rid:int}/logout", links.logout, methods=["POST"]),
        Route("/d/{token}", downloads.open_link, methods=["GET"]),
        Route("/a/{aid}/", downloads.view, methods=["GET"]),
        Route("/a/{aid}/start", downloads.start, methods=["POST"]),
        Route("/a/{aid}/send", downloads.send_code, methods=["POST"]),
        Route("/a/{aid}/verify", downloads.verify, methods=["POST"]),
        Route("/a/{aid}/file", downloads.file, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", metrics.portal_endpoint(portal.cfg.metrics.token), methods=["GET"]),
        Mount("/static", app=_Static(directory=str(_HERE / "static")), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_purge_loop, portal)
            if on_ready is not None:
                on_ready()
            yield
            tasks.cancel_scope.cancel()

    inner = Starlette(routes=routes, lifespan=lifespan)
    inner.add_exception_handler(404, _not_found(portal))
    inner.add_exception_handler(405, _not_found(portal))
    if portal.root:
        app = Starlette(routes=[Mount(portal.root, app=inner)], lifespan=lifespan)
    else:
        app = inner
    app.add_middleware(SecurityHeaders, hsts=portal.secure)
    return app


def _not_found(portal: Portal) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        lang = portal.language(request)
        return portal.notice(
            request, "not_found", lang=lang, here=portal.root + "/", status=404, kind="error"
        )

    return handler


async def _purge_loop(portal: Portal) -> None:
    """Expired messages lose their data key here (every instance may do it: revoking is
    idempotent), so expiry needs no extra timer."""
    while True:
        try:
            count = await run_in_threadpool(portal.store.purge_expired)
            if count:
                log.info("revoked %d expired message(s)", count)
        except Exception:  # keep serving; the next pass retries
            log.exception("purging expired messages failed")
        await anyio.sleep(defaults.PORTAL_PURGE_SECONDS)


def trusted_markup(html: str) -> Markup:
    """Mark HTML as safe for the templates: only for what we generated (the QR code's SVG) or
    what nh3 sanitized (render.sanitize_html), never for input as it came."""
    return Markup(html)
