"""What the pages of both kinds of guest link share: the first visit that trades the token for a
pass, the checks every later request passes (pass, stage, CSRF, content still there), sending a
code and the pages after a refused answer. links.py and downloads.py subclass `GuestPages`.

Each rule lives here once; what differs between the two kinds (what a token opens, who the
visitor is, what a verified visitor may do) stays in the subclasses, as the hooks below.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from zivmilter.portal import flows, verify
from zivmilter.portal.context import Portal
from zivmilter.portal.security import Pass, Stage
from zivmilter.store import RecipientRecord

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# Forms of a few short fields; only the reply form (links.py) takes files.
_SMALL_FORM = {"max_files": 0, "max_fields": 10, "max_part_size": 8192}


@dataclass(frozen=True)
class Ctx:
    """A request behind a link: the visitor's pass, the page language and the link's page."""

    p: Pass
    lang: str
    here: str


C = TypeVar("C", bound=Ctx)


class GuestPages(ABC, Generic[C]):
    def __init__(self, portal: Portal) -> None:
        self.portal = portal

    # -- hooks -----------------------------------------------------------------------------

    @abstractmethod
    def _context(self, request: Request, need: Stage) -> tuple[C | None, Response]:
        """The visitor's pass and what it opens (then `_admit`); or the page to show instead."""

    @abstractmethod
    def _verify_page(
        self,
        request: Request,
        ctx: C,
        *,
        error: str | None = None,
        notice: str | None = None,
        status: int = 200,
        **fmt: str,
    ) -> Response:
        """The page with the verification form."""

    @abstractmethod
    def _record_csrf_refusal(self, ctx: C) -> None:
        """The audit event of a form post refused for its CSRF token or origin."""

    def _fresh(self, ctx: C) -> C:
        """`ctx` with the recipient's lockout as the store has it now, after a failure moved
        it; unchanged where `_verify_page` reads the recipient itself."""
        return ctx

    # -- the first visit -------------------------------------------------------------------

    def _unknown_link(self, request: Request, lang: str) -> Response:
        here = self.portal.root + "/"
        return self.portal.notice(
            request, "unknown_link", lang=lang, here=here, status=404, kind="error"
        )

    def _first_visit(
        self, request: Request, scope: str, here: str, lang: str
    ) -> tuple[Response, bool]:
        """The page that moves the visitor off the token URL to `here`, and whether they were
        verified already: a verified pass still holds, any other is replaced by a fresh one."""
        portal = self.portal
        response = portal.page(
            request, "open.html", {"next": here, "referrer": "no-referrer"}, lang=lang, here=here,
            headers={"referrer-policy": "no-referrer"},  # the URL of this page is the token
        )  # fmt: skip
        current = portal.get_pass(request, scope)
        verified = current is not None and current.stage is Stage.VERIFIED
        if not verified:
            portal.give_pass(response, portal.new_pass(scope, Stage.LINK))
        return response, verified

    # -- every later request ---------------------------------------------------------------

    def _no_pass(self, request: Request, lang: str, here: str) -> Response:
        return self.portal.notice(
            request, "no_pass", lang=lang, here=here, status=403, kind="error"
        )

    def _admit(
        self, request: Request, ctx: C, gone: str | None, need: Stage
    ) -> tuple[C | None, Response]:
        """The end of `_context`: the content must still be there (`gone`: why it is not,
        "revoked" or "expired") and the pass far enough."""
        if gone is not None:
            return None, self._gone(request, ctx, gone)
        if ctx.p.stage < need:
            if request.method == "GET":
                return None, RedirectResponse(ctx.here, status_code=303)
            return None, self._no_pass(request, ctx.lang, ctx.here)
        return ctx, Response()

    def _form_context(
        self, request: Request, need: Stage, form: str, fields: dict[str, str]
    ) -> tuple[C | None, Response]:
        """`_context` for a form post, which must carry the CSRF token of this pass and form."""
        ctx, error = self._context(request, need)
        if ctx is None:
            return None, error
        if not self.portal.form_allowed(request, ctx.p, form, fields["csrf"]):
            self._record_csrf_refusal(ctx)
            return None, self.portal.notice(
                request, "csrf", lang=ctx.lang, here=ctx.here, status=403, kind="error"
            )
        return ctx, error

    def _gone(self, request: Request, ctx: C, reason: str) -> Response:
        response = self.portal.notice(
            request, reason, lang=ctx.lang, here=ctx.here, status=410, kind="error"
        )
        self.portal.drop_pass(response, ctx.p.scope)
        return response

    def _advance(self, ctx: C, stage: Stage, who: int = 0) -> Response:
        """Back to the link's page with a new pass."""
        response = RedirectResponse(ctx.here, status_code=303)
        self.portal.give_pass(response, self.portal.new_pass(ctx.p.scope, stage, who))
        return response

    # -- verification ----------------------------------------------------------------------

    def _send(self, request: Request, ctx: C, rec: RecipientRecord, method: str) -> Response:
        """Send `rec` a code by `method` unless the link is locked, and say how it went."""
        if verify.locked(rec.locked_until, self.portal.now()):
            return self._verify_page(request, ctx, status=429)
        result = flows.send_code(self.portal, rec, method, ctx.lang)
        if result.outcome is flows.Sent.SENT:
            return code_sent(ctx)
        if result.outcome is flows.Sent.WAIT:
            return self._verify_page(
                request, ctx, error="code_wait", status=429, seconds=str(result.wait)
            )
        if result.outcome is flows.Sent.EXHAUSTED:
            return self._verify_page(request, ctx, error="code_exhausted", status=429)
        return self._verify_page(request, ctx, error="code_failed", status=503)

    def _refused(self, request: Request, ctx: C, method: str, outcome: flows.Answer) -> Response:
        """After an answer that did not verify: back to the link's page (POST/redirect/GET),
        which then says so, locked (429) or wrong (401). A reload of that page asks nothing
        again; a reload of the answer's own response would send the wrong answer once more,
        and count it against the recipient."""
        if outcome is flows.Answer.LOCKED:
            kind = "locked"
        else:
            kind = "wrong_password" if method == "account" else "wrong_code"
        return RedirectResponse(f"{ctx.here}?refused={kind}", status_code=303)


def lock_view(lock: float, status: int) -> tuple[int, int]:
    """The status and the minutes to show on a verification page while the link is locked for
    `lock` more seconds: what would have been a success is a 429 then."""
    if not lock:
        return status, 0
    return (429 if status < 400 else status), int(lock // 60) + 1


def code_sent(ctx: Ctx) -> Response:
    """Back to the link's page, which then says a code is on its way (`sent_notice`)."""
    return RedirectResponse(ctx.here + "?sent=1", status_code=303)


def sent_notice(request: Request) -> str | None:
    return "code_sent" if request.query_params.get("sent") == "1" else None


def refused_view(request: Request) -> dict[str, Any]:
    """How the link's page shows the answer `_refused` redirected from: wrong (401), or
    locked (429: the page reads the lock from the store, so it shows whether it still holds)."""
    kind = request.query_params.get("refused")
    if kind in ("wrong_code", "wrong_password"):
        return {"error": kind, "status": 401}
    return {}


def link_token(request: Request) -> str | None:
    """The token of a first-visit URL, if it has a token's shape at all."""
    token = str(request.path_params["token"])
    return token if _TOKEN.match(token) else None


async def small_form(request: Request, *names: str) -> dict[str, str]:
    form = await request.form(**_SMALL_FORM)
    return {name: field(form, name) for name in names}


def field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
