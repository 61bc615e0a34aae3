"""The portal's ASGI application: the routes, security headers, the 404 page, the purge loop.

`create_app(portal)` builds the Starlette app; the pages live in links.py (personal links: verify,
read, reply) and downloads.py (large attachments of direct deliveries), on what pages.py gives
both; what they all share (the `Portal`: cookies, CSRF, languages, templates) is context.py's.
The only state is the store and signed cookies (security.py), so several instances can serve one
site. Blocking work (SQLite, scrypt, argon2, SMTP, SMS) runs in Starlette's thread
pool, never on the event loop.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zivmilter import defaults, metrics
from zivmilter.portal.brand import brand_asset
from zivmilter.portal.context import Portal
from zivmilter.portal.downloads import DownloadPages
from zivmilter.portal.links import LinkPages
from zivmilter.portal.sent import SentPages

log = logging.getLogger("zivmilter.portal")

_HERE = Path(__file__).parent

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


class SecurityHeaders:
    """Adds the default security headers to every response that does not set its own."""

    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        defaults = dict(_SECURITY_HEADERS)
        if hsts:
            defaults["strict-transport-security"] = "max-age=31536000"
        # Encoded once: every response only appends the pairs it lacks to its raw header list.
        self.defaults = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in defaults.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [pair for pair in self.defaults if pair[0] not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Static(StaticFiles):
    """The stylesheet may be cached (it is public and versioned with the package)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=3600"
        return response


def create_app(portal: Portal, on_ready: Callable[[], object] | None = None) -> Starlette:
    links = LinkPages(portal)
    downloads = DownloadPages(portal)
    sent = SentPages(portal)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/m/{token}", links.open_link, methods=["GET"]),
        Route("/r/{rid:int}/", links.view, methods=["GET"]),
        Route("/r/{rid:int}/send", links.send_code, methods=["POST"]),
        Route("/r/{rid:int}/verify", links.verify, methods=["POST"]),
        Route("/r/{rid:int}/enrol", links.enrol, methods=["POST"]),
        Route("/r/{rid:int}/body", links.body, methods=["GET"]),
        Route("/r/{rid:int}/remote", links.remote, methods=["POST"]),
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
        # the sender's side (sent.py, issue 19)
        Route("/sent/", sent.index, methods=["GET"]),
        Route("/sent/sign-in", sent.sign_in, methods=["POST"]),
        Route("/sent/sign-out", sent.sign_out, methods=["POST"]),
        Route("/sent/invite/", sent.invite, methods=["GET"]),
        Route("/sent/invite/", sent.enrol, methods=["POST"]),
        Route("/sent/invite/{token}", sent.open_invite, methods=["GET"]),
        Route("/sent/m/{mid}/", sent.message, methods=["GET"]),
        Route("/sent/m/{mid}/revoke", sent.confirm_revoke, methods=["GET"]),
        Route("/sent/m/{mid}/revoke", sent.revoke, methods=["POST"]),
        Route("/sent/m/{mid}/expiry", sent.expiry_form, methods=["GET"]),
        Route("/sent/m/{mid}/expiry", sent.expiry, methods=["POST"]),
        Route("/brand/{name}", brand_asset(portal), methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", metrics.portal_endpoint(portal.cfg.metrics.token), methods=["GET"]),
        Mount("/static", app=_Static(directory=str(_HERE / "static")), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_purge_loop, portal)
            # What start-up made (modules, templates, the pool) lives as long as the process:
            # frozen out of the collector's sight, so that a full collection no longer walks it
            # with the GIL held. One took ~50 ms in a portal here, every request in flight
            # waiting (bench/portal.sh's p99); after, the longest ~1 ms.
            gc.collect()
            gc.freeze()
            if on_ready is not None:
                on_ready()
            yield
            gc.unfreeze()  # an app that ends in a process that goes on (tests) leaves no more
            tasks.cancel_scope.cancel()

    inner = Starlette(routes=routes, lifespan=lifespan)
    # Starlette's own slash redirect builds its Location from the Host header: ours (in the
    # 404 handler) from portal.base_url.
    inner.router.redirect_slashes = False
    inner.add_exception_handler(404, _not_found(portal, inner.router))
    inner.add_exception_handler(405, _not_found(portal))
    if portal.root:
        app = Starlette(routes=[Mount(portal.root, app=inner)], lifespan=lifespan)
        app.router.redirect_slashes = False
    else:
        app = inner
    app.add_middleware(SecurityHeaders, hsts=portal.secure)
    return app


def _not_found(portal: Portal, router: Router | None = None) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> Response:
        if router is not None and (location := _slash_redirect(portal, router, request)):
            return RedirectResponse(location, status_code=307)
        lang = portal.language(request)
        return portal.notice(
            request, "not_found", lang=lang, here=portal.root + "/", status=404, kind="error"
        )

    return handler


def _slash_redirect(portal: Portal, router: Router, request: Request) -> str | None:
    """Where a path that matches a route only with (or without) its final "/" belongs: on
    portal.base_url's origin, whatever Host the request named."""
    path = str(request.scope["path"])
    if path.rstrip("/") == portal.root:
        return None
    toggled = path[:-1] if path.endswith("/") else path + "/"
    other = dict(request.scope, path=toggled)
    if not any(route.matches(other)[0] is not Match.NONE for route in router.routes):
        return None
    query = request.url.query
    return portal.origin + toggled + ("?" + query if query else "")


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
