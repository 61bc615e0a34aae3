"""The portal app in-process (Starlette's test client) on a real encrypted store: every rule a
visitor meets — verification by each method, lockout, CSRF, links bound to one recipient,
revocation, expiry, sanitizing, downloads, replies, languages, security headers.

The SMS provider is the real `file` backend (and a real local HTTP server for the webhook); the
MTA is a recording stand-in for the re-injection listener (the browser tests use real Postfix).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

with warnings.catch_warnings():  # Starlette 1.x deprecates its httpx-based client; it works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from tests.fakes import make_config
from zivmilter import crypto, defaults
from zivmilter.core import config as config_mod
from zivmilter.core.config import SmsWebhookConfig
from zivmilter.core.facts import facts_from_mapping
from zivmilter.delivery.reinject import Outgoing
from zivmilter.errors import DeliveryError
from zivmilter.gateway import Gateway, Transaction
from zivmilter.portal import accounts
from zivmilter.portal.app import create_app
from zivmilter.portal.context import Portal
from zivmilter.portal.security import PortalKeys
from zivmilter.portal.sms import FileSms, WebhookSms
from zivmilter.store import NewMessage, NewRecipient, SqliteStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CODE = "tulip-secret-42"
PHONE = "+31612345678"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
BASE = "http://portal.test"


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 24, 9, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.t


class RecordingMailer:
    """Stands in for the re-injection listener: keeps what would be handed to Postfix."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.fail = False
        self.refuse = False  # for good: the MTA's 5xx

    def send(self, messages: Sequence[Outgoing]) -> list[str]:
        if self.fail:
            raise DeliveryError("re-injection to 127.0.0.1:10026 failed: connection refused")
        if self.refuse:
            raise DeliveryError(
                "portal reply: RCPT TO alice@hospital.example refused: 550 5.1.1 User unknown",
                permanent=True,
            )
        self.sent.extend(messages)
        return ["250 2.0.0 Ok: queued as ABC123"] * len(messages)

    def last(self) -> EmailMessage:
        raw = self.sent[-1].content
        assert isinstance(raw, bytes)
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class Env:
    def __init__(self, tmp: Path, overrides: dict[str, Any] | None = None) -> None:
        self.clock = Clock()
        self.kek = os.urandom(32)
        self.path = str(tmp / "store")
        self.store = SqliteStore.open(self.path, self.kek, now=self.clock)
        data: dict[str, Any] = {
            "organization": {"name": "Hospital", "domains": ["hospital.example"]},
            "portal": {"base_url": BASE + "/"},
            "notification": {"languages": {"example.nl": "nl"}},
        }
        data.update(overrides or {})
        self.cfg = config_mod.from_mapping(data)
        self.sms_file = tmp / "sms.log"
        self.mailer = RecordingMailer()
        self.portal = Portal(
            cfg=self.cfg,
            store=self.store,
            keys=PortalKeys.from_kek(self.kek),
            sms=FileSms(str(self.sms_file)),
            mailer=self.mailer,
            clock=self.clock,
        )
        self.app = create_app(self.portal)

    def client(self) -> TestClient:
        return TestClient(self.app, base_url=self.cfg.portal.base_url.rstrip("/"))

    def rotate(self) -> None:
        """A key rotation run to its end (README "Key rotation"): a new key, `rekey`, the old
        key retired, the portal started again on the new key alone."""
        new = os.urandom(32)
        self.store.close()
        ring = SqliteStore.open(self.path, new, previous=[self.kek], now=self.clock)
        while ring.rekey_batch(100):
            pass
        ring.close()
        self.kek = new
        self.store = SqliteStore.open(self.path, new, now=self.clock)
        self.portal = Portal(
            cfg=self.cfg,
            store=self.store,
            keys=PortalKeys.from_kek(new),
            sms=FileSms(str(self.sms_file)),
            mailer=self.mailer,
            clock=self.clock,
        )
        self.app = create_app(self.portal)

    def save(
        self,
        recipients: list[NewRecipient],
        content: bytes | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, dict[str, str]]:
        saved = self.store.save_message(
            NewMessage(
                sender="alice@hospital.example",
                subject="Lab results",
                content=content or message_bytes(),
                recipients=recipients,
                rfc822_id="<lab-1@hospital.example>",
                expires_at=expires_at,
            )
        )
        return saved.id, saved.tokens

    def rid(self, message_id: str, address: str) -> int:
        (r,) = [r for r in self.store.recipients(message_id) if r.address == address]
        return r.id


@functools.cache  # the same bytes each time: built once (the email package takes some ms)
def message_bytes(html: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = "bob@example.net, carol@example.com"
    msg["Subject"] = "Lab results"
    msg["Message-ID"] = "<lab-1@hospital.example>"
    msg.set_content("BODY-MARKER the results are fine")
    msg.add_alternative(
        html
        or (
            '<p>BODY-MARKER <b>fine</b><img src="cid:logo@h"><img src="https://t.example/p.gif">'
            "<script>document.title='pwned'</script><img src=x onerror=\"alert(1)\"></p>"
        ),
        subtype="html",
    )
    body = msg.get_body(("html",))
    assert body is not None
    body.add_related(b"\x89PNG\r\n\x1a\nlogo", maintype="image", subtype="png", cid="<logo@h>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="résults.pdf")
    return msg.as_bytes(policy=policy.SMTP)


def code_rcpt(address: str, code: str = CODE) -> NewRecipient:
    return NewRecipient(
        address, 1, "custom_access_right", "notification", "A3",
        verification="access_code", access_code=code, hint="our project's name",
    )  # fmt: skip


def rcpt(address: str, verification: str, **kw: Any) -> NewRecipient:
    return NewRecipient(address, 1, "x", "notification", "A7", verification=verification, **kw)  # type: ignore[arg-type]


def csrf(html: str, action: str) -> str:
    m = re.search(
        r'action="[^"]*/' + re.escape(action) + r'(?:\?csrf=[^"]*)?"[^>]*>\s*'
        r'<input type="hidden" name="csrf" '
        r'value="([^"]+)"',
        html,
    )
    assert m, f"no form for {action}"
    return m.group(1)


def shows_message(r: Any) -> bool:
    """The message page (headers, frame, attachments), as opposed to a verification page."""
    return 'id="subject"' in r.text and "/body" in r.text


def open_link(client: TestClient, token: str) -> str:
    """Open a personal link like a browser: the first page, then where it sends us."""
    first = client.get(f"/m/{token}")
    assert first.status_code == 200
    target = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', first.text)
    assert target
    return target.group(1)


def verified(env: Env, client: TestClient, token: str, code: str = CODE) -> str:
    here = open_link(client, token)
    page = client.get(here)
    r = client.post(here + "verify", data={"csrf": csrf(page.text, "verify"), "code": code})
    assert r.status_code == 200 and shows_message(r), r.text
    return here


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


# --- first visit, headers, cookies -----------------------------------------------------------


def test_token_leaves_the_url_and_every_page_is_locked_down(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    token = tokens["bob@example.net"]
    with env.client() as client:
        first = client.get(f"/m/{token}")
        assert first.status_code == 200
        rid = env.rid(mid, "bob@example.net")
        assert f'content="0;url=/r/{rid}/"' in first.text
        assert token not in first.text
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"zv_r{rid}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # the site is http here; see the https test below
        page = client.get(f"/r/{rid}/")
        assert page.status_code == 200
        for r in (first, page):
            h = r.headers
            assert h["cache-control"] == "no-store"
            assert h["referrer-policy"] == ("no-referrer" if r is first else "same-origin")
            assert h["x-content-type-options"] == "nosniff"
            assert h["x-frame-options"] == "DENY"
            csp = h["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp
            assert "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert "<script" not in page.text
        assert "our project&#39;s name" in page.text  # the sender's hint is shown


def test_https_site_gets_secure_cookies_and_hsts(tmp_path: Path) -> None:
    env = Env(tmp_path, {"portal": {"base_url": "https://secure.hospital.example/portal/"}})
    _, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        first = client.get(f"/m/{tokens['bob@example.net']}")  # the client adds /portal
        assert first.status_code == 200
        assert "Secure" in first.headers["set-cookie"]
        assert "Path=/portal/" in first.headers["set-cookie"]
        assert first.headers["strict-transport-security"].startswith("max-age=")
        assert "url=/portal/r/" in first.text
    env.store.close()


def test_unknown_or_malformed_link(env: Env) -> None:
    with env.client() as client:
        for token in ("A" * 32, "short", "with%20space"):
            r = client.get(f"/m/{token}")
            assert r.status_code == 404 and "This link does not work" in r.text
            assert "set-cookie" not in r.headers
        assert client.get("/m/a/../../etc").status_code == 404
        assert client.get("/r/1/").status_code == 403  # no cookie: no page, not even its method


# --- access code, lockout, contact book -----------------------------------------------------


def test_access_code_wrong_then_right_then_remembered(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = open_link(client, tokens["bob@example.net"])
        page = client.get(here)
        assert not shows_message(page)
        wrong = client.post(here + "verify", data={"csrf": csrf(page.text, "verify"), "code": "x"})
        assert wrong.status_code == 401 and 'id="error"' in wrong.text
        assert client.get(here + "body").status_code == 200  # redirected back to verification
        assert "BODY-MARKER" not in client.get(here + "body").text
        right = client.post(here + "verify", data={"csrf": csrf(page.text, "verify"), "code": CODE})
        assert right.status_code == 200 and shows_message(right)
        assert right.history[0].status_code == 303
    rec = env.store.recipient(env.rid(mid, "bob@example.net"))
    assert rec is not None and rec.opened_at is not None and rec.failed_attempts == 1
    contact = env.store.contact("bob@example.net")
    assert contact is not None and contact.access_code  # rule A6 may use it from now on
    events = [e.event for e in env.store.events(mid)]
    assert events.count("verify-failed") == 1 and "verified" in events and "opened" in events


def test_an_access_code_made_under_a_retired_key_is_made_again_as_it_is_proven(
    env: Env,
) -> None:
    """After a rotation the code still works (the old key's pepper carried over); proving it
    hashes it again under the new key, in the link and in the contact book that remembers it,
    so that no hash names the old pepper any more (maintenance may let it go)."""
    _, tokens = env.save([code_rcpt("bob@example.net")])
    old_id = crypto.key_id(env.kek).hex()
    env.rotate()
    assert env.store.key_usage().peppers == {old_id: 1}
    with env.client() as client:
        verified(env, client, tokens["bob@example.net"])
    assert env.store.key_usage().peppers == {old_id: 0}
    # The next message takes bob's code from the contact book: the same code opens it.
    _, again = env.save([rcpt("bob@example.net", "access_code")])
    with env.client() as client:
        verified(env, client, again["bob@example.net"])


def test_states_have_their_own_titles_and_errors_name_their_field(env: Env) -> None:
    """A screen reader user hears the page title first, and from the field what is wrong with
    it (WCAG 2.4.2, 3.3.1): the asking, wrong and locked pages differ in title; the wrong code
    marks the code field invalid and points it at the error."""
    _, tokens = env.save([code_rcpt("bob@example.net"), rcpt("s@example.org", "email")])

    def title(html: str) -> str:
        found = re.search(r"<title>(.*?)</title>", html, re.S)
        assert found is not None
        return found.group(1)

    def code_field(html: str) -> str:
        found = re.search(r'<input id="code"[^>]*>', html)
        assert found is not None
        return found.group(0)

    with env.client() as client:
        here = open_link(client, tokens["bob@example.net"])
        asking = client.get(here).text
        assert "aria-invalid" not in code_field(asking)
        token = csrf(asking, "verify")
        wrong = client.post(here + "verify", data={"csrf": token, "code": "x"}).text
        assert 'aria-invalid="true" aria-describedby="error"' in code_field(wrong)
        assert 'id="error"' in wrong
        for _ in range(defaults.LOCKOUT_AFTER - 1):
            locked = client.post(here + "verify", data={"csrf": token, "code": "x"}).text
        assert 'id="locked"' in locked
        emailed = open_link(client, tokens["s@example.org"])
        page = client.get(emailed).text
        sent = client.post(emailed + "send", data={"csrf": csrf(page, "send")}).text
        assert 'id="notice"' in sent and 'autocomplete="one-time-code"' in code_field(sent)
    titles = [title(p) for p in (asking, wrong, locked, sent)]
    assert len(set(titles)) == 4, titles
    assert titles[1].startswith("Error: ") and titles[2].startswith("Locked: ")
    assert titles[3].startswith("Code sent: ")


def test_reloading_after_a_wrong_code_does_not_send_it_again(env: Env) -> None:
    # The answer's response is a redirect to the link's page (POST/redirect/GET): a reload
    # shows the same "not right" page and counts nothing more against the recipient.
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = open_link(client, tokens["bob@example.net"])
        page = client.get(here)
        form = {"csrf": csrf(page.text, "verify"), "code": "wrong-1"}
        wrong = client.post(here + "verify", data=form, follow_redirects=False)
        assert wrong.status_code == 303
        assert wrong.headers["location"].endswith("?refused=wrong_code")
        for _ in range(3):  # the reloads
            shown = client.get(wrong.headers["location"])
            assert shown.status_code == 401 and 'id="error"' in shown.text
    rec = env.store.recipient(env.rid(mid, "bob@example.net"))
    assert rec is not None and rec.failed_attempts == 1


def test_lockout_after_repeated_wrong_codes_grows(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    rid = env.rid(mid, "bob@example.net")
    with env.client() as client:
        here = open_link(client, tokens["bob@example.net"])
        token = csrf(client.get(here).text, "verify")

        def attempt(code: str) -> Any:
            return client.post(here + "verify", data={"csrf": token, "code": code})

        for _ in range(defaults.LOCKOUT_AFTER - 1):
            assert attempt("wrong").status_code == 401
        locked = attempt("wrong")
        assert locked.status_code == 429 and 'id="locked"' in locked.text
        assert "try again in 2 minutes." in locked.text  # not "minute(s)"
        env.clock.t += 30
        nl = client.get(here + "?lang=nl")
        assert "probeer het over 1 minuut opnieuw" in nl.text  # not "minuut/minuten"
        assert "try again in 1 minute." in client.get(here + "?lang=en").text
        env.clock.t -= 30
        assert attempt(CODE).status_code == 429, "the right code does not open a locked link"
        rec = env.store.recipient(rid)
        assert rec is not None and rec.locked_until is not None
        first_lock = rec.locked_until.timestamp() - env.clock.t
        assert first_lock == defaults.LOCKOUT_BASE_SECONDS
        env.clock.t += first_lock + 1
        for _ in range(defaults.LOCKOUT_AFTER):
            again = attempt("wrong")
        assert "try again in 3 minutes." in again.text
        rec = env.store.recipient(rid)
        assert rec is not None and rec.locked_until is not None
        assert rec.locked_until.timestamp() - env.clock.t == 2 * defaults.LOCKOUT_BASE_SECONDS
        env.clock.t += 2 * defaults.LOCKOUT_BASE_SECONDS + 1
        assert attempt(CODE).status_code == 200
    rec = env.store.recipient(rid)
    assert rec is not None and rec.failed_attempts == 2 * defaults.LOCKOUT_AFTER
    events = [e.event for e in env.store.events(mid)]
    assert events.count("locked") == 2 and events.count("verify-failed") == 10
    assert events.count("verify-while-locked") == 1  # refused, but in the audit log too


def test_wrong_codes_sent_at_once_get_no_more_guesses_than_the_lockout(env: Env) -> None:
    """Sixteen answers posted at the same moment (each comparison takes scrypt's time, so they
    are all in flight together): only the lockout's number of them is compared; the others, and
    the right code after them, are refused with the lock page."""
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    n = 16
    statuses: list[int] = []
    shown: list[bool] = []
    with env.client() as client:
        here = open_link(client, tokens["bob@example.net"])
        token = csrf(client.get(here).text, "verify")
        barrier = threading.Barrier(n)

        def guess(i: int) -> None:
            barrier.wait()
            r = client.post(here + "verify", data={"csrf": token, "code": f"guess-{i}"})
            statuses.append(r.status_code)
            shown.append(shows_message(r))

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(statuses) == n and set(statuses) <= {401, 429} and not any(shown)
        assert statuses.count(429) >= n - defaults.LOCKOUT_AFTER + 1  # the locking one too
        right = client.post(here + "verify", data={"csrf": token, "code": CODE})
        assert right.status_code == 429 and 'id="locked"' in right.text
        assert not shows_message(right)
    events = [e.event for e in env.store.events(mid)]
    assert events.count("verify-failed") == defaults.LOCKOUT_AFTER
    assert events.count("locked") == 1 and "verified" not in events
    assert events.count("verify-while-locked") == n - defaults.LOCKOUT_AFTER + 1
    rec = env.store.recipient(env.rid(mid, "bob@example.net"))
    assert rec is not None and rec.failed_attempts == defaults.LOCKOUT_AFTER


# --- CSRF and binding -------------------------------------------------------------------------


def test_forms_without_the_right_csrf_token_are_refused(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client, env.client() as other:
        here = open_link(client, tokens["bob@example.net"])
        token = csrf(client.get(here).text, "verify")
        open_link(other, tokens["bob@example.net"])
        other_token = csrf(other.get(here).text, "verify")
        for data, headers in (
            ({"code": CODE}, {}),  # no token
            ({"code": CODE, "csrf": other_token}, {}),  # another browser's token
            ({"code": CODE, "csrf": "x"}, {}),  # a made-up token
            ({"code": CODE, "csrf": token}, {"origin": "https://evil.example"}),
        ):
            r = client.post(here + "verify", data=data, headers=headers)
            assert r.status_code == 403 and "form has expired" in r.text
        assert client.post(here + "verify", data={"code": CODE, "csrf": token}).status_code == 200
        page = client.get(here)
        assert client.post(here + "reply", data={"text": "hi"}).status_code == 403
        assert (
            client.post(here + "logout", data={"csrf": csrf(page.text, "reply")}).status_code == 403
        )
    rec = env.store.recipient(env.rid(mid, "bob@example.net"))
    assert rec is not None and rec.failed_attempts == 0, "a refused form is not an attempt"
    assert env.mailer.sent == []


def test_link_for_recipient_a_is_refused_for_recipient_b(env: Env) -> None:
    mid, tokens = env.save(
        [code_rcpt("a@example.net", "code-of-a"), code_rcpt("b@example.net", "code-of-b")]
    )
    rid_a, rid_b = env.rid(mid, "a@example.net"), env.rid(mid, "b@example.net")
    with env.client() as b:
        here_b = verified(env, b, tokens["b@example.net"], "code-of-b")
        assert here_b == f"/r/{rid_b}/"
        # B's verified session does not open A's pages, not even with the cookie renamed.
        for path in ("", "body", "attachment/3"):
            assert b.get(f"/r/{rid_a}/{path}").status_code == 403
        session = b.cookies.get(f"zv_r{rid_b}")
        assert session
        b.cookies.set(f"zv_r{rid_a}", session, domain="portal.test")
        assert b.get(f"/r/{rid_a}/").status_code == 403
        # B holding A's link must prove to be A: B's own code does not work there.
        here_a = open_link(b, tokens["a@example.net"])
        page = b.get(here_a)
        r = b.post(here_a + "verify", data={"csrf": csrf(page.text, "verify"), "code": "code-of-b"})
        assert r.status_code == 401 and not shows_message(r)


# --- revocation and expiry --------------------------------------------------------------------


def test_revoked_message_is_unreadable_and_says_so(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        assert env.store.revoke(mid, "test")
        for path in ("", "body", "attachment/3"):
            r = client.get(here + path)
            assert r.status_code in (403, 410)
            assert "BODY-MARKER" not in r.text
        gone = client.get(f"/m/{tokens['bob@example.net']}")
        page = client.get(here)
        assert page.status_code == 410 and "withdrawn" in page.text, (gone.text, page.text)
    assert env.store.open_content(mid) is None


def test_revoking_one_recipient_keeps_the_others(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("a@example.net"), code_rcpt("b@example.net")])
    with env.client() as a, env.client() as b:
        here_a = verified(env, a, tokens["a@example.net"])
        here_b = verified(env, b, tokens["b@example.net"])
        assert env.store.revoke_recipient(mid, "A@example.net")
        assert a.get(here_a).status_code == 410
        assert shows_message(b.get(here_b))
        message = env.store.message(mid)
        assert message is not None and message.revoked_at is None
        assert env.store.revoke_recipient(mid, "b@example.net")  # the last link: key destroyed
        message = env.store.message(mid)
        assert message is not None and message.revoked_at is not None
        assert b.get(here_b).status_code == 410


def test_expired_message_is_unreadable_before_and_after_purge(env: Env) -> None:
    expires = datetime.fromtimestamp(env.clock.t, UTC) + timedelta(days=1)
    _, tokens = env.save([code_rcpt("bob@example.net")], expires_at=expires)
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        env.clock.t += 24 * 3600
        assert client.get(here).status_code == 403  # the session ended long before
        open_link(client, tokens["bob@example.net"])
        page = client.get(here)
        assert page.status_code == 410 and "expired" in page.text
        assert not shows_message(page)
        assert env.store.purge_expired() == 1
        open_link(client, tokens["bob@example.net"])
        assert "expired" in client.get(here).text


def test_every_showing_of_the_message_is_an_open_and_nothing_else_is(env: Env) -> None:
    """SPEC 8: every open is recorded. An open is the message shown to a verified recipient:
    each view counts; a visit that shows nothing (the verification page, the first page of the
    link, a withdrawn message) does not."""
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    rid = env.rid(mid, "bob@example.net")

    def opens() -> list[datetime]:
        return [e.at for e in env.store.events(mid) if e.event == "opened"]

    with env.client() as client:
        here = open_link(client, tokens["bob@example.net"])
        assert not shows_message(client.get(here)) and opens() == []  # not verified yet
        page = client.get(here)
        client.post(here + "verify", data={"csrf": csrf(page.text, "verify"), "code": CODE})
        first = env.clock.t
        assert len(opens()) == 1
        env.clock.t += 600
        for _ in range(3):
            assert shows_message(client.get(here))
        assert len(opens()) == 4 and opens()[-1].timestamp() == env.clock.t
        rec = env.store.recipient(rid)
        assert rec is not None and rec.opened_at is not None
        assert rec.opened_at.timestamp() == first  # read status: the first open
        open_link(client, tokens["bob@example.net"])  # the token's page shows nothing
        assert len(opens()) == 4
        assert shows_message(client.get(here))  # where it leads does
        assert len(opens()) == 5
        assert env.store.revoke(mid, "test")
        open_link(client, tokens["bob@example.net"])
        gone = client.get(here)
        assert gone.status_code == 410 and not shows_message(gone)
    assert len(opens()) == 5


# --- reading ----------------------------------------------------------------------------------


def test_html_is_sanitized_and_framed(env: Env) -> None:
    _, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        page = client.get(here)
        assert f'src="{here}body"' in page.text and 'sandbox="allow-same-origin' in page.text
        assert 'id="remote"' in page.text  # remote images are held back, with a way to consent
        body = client.get(here + "body")
        assert body.status_code == 200 and "BODY-MARKER" in body.text
        for bad in ("<script", "pwned", "onerror", "t.example"):
            assert bad not in body.text
        csp = body.headers["content-security-policy"]
        assert "sandbox" in csp and "allow-scripts" not in csp and "frame-ancestors 'self'" in csp
        assert "img-src 'self';" in csp
        inline = re.search(r'src="(/r/\d+/part/\d+)"', body.text)
        assert inline
        image = client.get(inline.group(1))
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.content.endswith(b"logo")
        # Consent is a form post (issue 15 item 15): the page it shows frames the body with
        # remote images; a link to ?remote=1 (one in the message itself, say) consents to none.
        for link in (here + "?remote=1", here + "body?remote=1"):
            assert "t.example" not in client.get(link).text
        assert "body?remote" not in client.get(here + "?remote=1").text
        assert (
            "img-src 'self';"
            in client.get(here + "body?remote=1").headers["content-security-policy"]
        )
        shown = client.post(here + "remote", data={"csrf": csrf(page.text, "remote")})
        assert shown.status_code == 200 and 'id="remote"' not in shown.text
        frame = re.search(r'id="body" src="([^"]+)"', shown.text)
        assert frame and "?remote=" in frame.group(1)
        consented = client.get(frame.group(1))
        assert "https://t.example/p.gif" in consented.text
        assert "https:" in consented.headers["content-security-policy"]
        assert client.post(here + "remote", data={"csrf": "forged"}).status_code == 403
        assert client.get(here + "part/999").status_code == 404


def test_attachment_downloads_byte_identical(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        link = re.search(r'href="([^"]+/attachment/\d+)"', client.get(here).text)
        assert link
        r = client.get(link.group(1))
        assert r.status_code == 200 and r.content == PDF
        assert r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"] == (
            "attachment; filename=\"r_sults.pdf\"; filename*=UTF-8''r%C3%A9sults.pdf"
        )
    assert "attachment-downloaded" in [e.event for e in env.store.events(mid)]


def _gateway_saves(env: Env, raw: bytes) -> str:
    """The message through the real gateway, as the milter hands it over (a notification to
    bob with an access code); returns bob's link token."""
    cfg = make_config(
        {"submission": {"any_address_of_own_domains": True}, "portal": {"base_url": BASE + "/"}}
    )
    gateway = Gateway(cfg, facts_from_mapping({}), env.store, env.mailer, hostname="gw.test")
    head = raw.partition(b"\r\n\r\n")[0]
    headers = [(n, v) for n, _, v in (f.partition(": ") for f in head.decode().split("\r\n"))]
    plan = gateway.process(
        Transaction(
            "QID8", "<alice@hospital.example>", ["<bob@example.net>"],
            headers, io.BytesIO(raw), len(head) + 4, "127.0.0.1",
        )
    )  # fmt: skip
    assert plan.replace_body is not None  # the notification to bob
    token = re.search(rb"/m/([A-Za-z0-9_-]{16,})\r\n", plan.replace_body)
    assert token
    return token.group(1).decode()


def _asgi_body_chunks(env: Env, client: TestClient, path: str) -> tuple[int, list[bytes]]:
    """GET `path` from the app itself with the client's cookies: the status and each body
    message the app sends (a streamed response sends many)."""
    import asyncio

    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "server": ("portal.test", 80), "client": ("127.0.0.1", 5000),
        "headers": [(b"host", b"portal.test"), (b"cookie", cookie.encode())],
    }  # fmt: skip
    status = 0
    chunks: list[bytes] = []
    requested = False

    async def main() -> None:
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()  # the client stays until the response is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.append(message["body"])
                if not message.get("more_body"):
                    done.set()

        await env.app(scope, receive, send)

    asyncio.run(main())
    return status, chunks


def test_a_large_attachment_streams_from_its_own_blob(env: Env) -> None:
    """A large attachment is kept apart when the gateway saves the message and is served in
    chunks as it is decrypted: the same bytes and headers as the parsing path gave, which still
    serves messages stored before (and small attachments)."""
    big = os.urandom(3 * 1024 * 1024 + 11)
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = "bob@example.net"
    msg["Subject"] = "Scan"
    msg["Message-ID"] = "<scan-2@hospital.example>"
    msg["zivver-access-right"] = f"bob@example.net access-code {CODE}"
    msg.set_content("BODY-MARKER the scan is attached")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="small.pdf")
    msg.add_attachment(big, maintype="application", subtype="pdf", filename="röntgen scan.pdf")
    raw = msg.as_bytes(policy=policy.SMTP)
    token = _gateway_saves(env, raw)
    (stored,) = env.store.find_messages("<scan-2@hospital.example>")
    part = env.store.part(stored.id, 2)
    assert part is not None and part.size == len(big)
    assert env.store.part(stored.id, 1) is None  # small: it stays in the message only
    # The same message as a zivmilter before this change stored it: nothing kept apart.
    old_id, old_tokens = env.save([code_rcpt("carol@example.com")], content=raw)
    assert env.store.part(old_id, 2) is None
    answers = []
    for link_token_, who in ((token, "bob@example.net"), (old_tokens["carol@example.com"], "")):
        with env.client() as client:
            here = verified(env, client, link_token_)
            links = re.findall(r'href="([^"]+/attachment/\d+)"', client.get(here).text)
            assert [link.rsplit("/", 1)[1] for link in links] == ["1", "2"]
            r = client.get(links[1])
            assert r.status_code == 200 and r.content == big
            answers.append({k: r.headers[k] for k in ("content-type", "content-disposition")})
            small = client.get(links[0])
            assert small.status_code == 200 and small.content == PDF
            if who:
                status, chunks = _asgi_body_chunks(env, client, links[1].removeprefix(BASE))
                assert status == 200 and b"".join(chunks) == big
                assert len(chunks) > 10 and max(len(c) for c in chunks) <= 64 * 1024
    assert answers[0] == answers[1]
    assert answers[0]["content-disposition"] == (
        "attachment; filename=\"r_ntgen scan.pdf\"; filename*=UTF-8''r%C3%B6ntgen%20scan.pdf"
    )
    events = [(e.event, e.detail) for e in env.store.events(stored.id)]
    assert ("attachment-downloaded", "part 2") in events
    env.store.revoke(stored.id, "test")
    with env.client() as client:
        assert client.get(links[1].removeprefix(BASE)).status_code in (403, 410)


# --- SMS and email codes ----------------------------------------------------------------------


def sms_codes(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(ln.split("\t")[1], re.findall(r"\b\d{6}\b", ln.split("\t")[2])[0]) for ln in lines]


def test_sms_code_flow_rate_limit_and_contact_book(env: Env) -> None:
    _, tokens = env.save([rcpt("carol@example.com", "sms", phone=PHONE)])
    with env.client() as client:
        here = open_link(client, tokens["carol@example.com"])
        page = client.get(here)
        assert "+31 6•••••678" in page.text and PHONE not in page.text
        sent = client.post(here + "send", data={"csrf": csrf(page.text, "send")})
        assert sent.status_code == 200 and 'id="notice"' in sent.text
        ((phone, code),) = sms_codes(env.sms_file)
        assert phone == PHONE
        again = client.post(here + "send", data={"csrf": csrf(page.text, "send")})
        assert again.status_code == 429 and "seconds" in again.text
        assert len(sms_codes(env.sms_file)) == 1
        r = client.post(here + "verify", data={"csrf": csrf(sent.text, "verify"), "code": code})
        assert r.status_code == 200 and shows_message(r)
    contact = env.store.contact("carol@example.com")
    assert contact is not None and contact.sms == PHONE  # rule A5 may use it from now on


def test_sms_code_expires_and_a_new_code_replaces_the_old(env: Env) -> None:
    _, tokens = env.save([rcpt("carol@example.com", "sms", phone=PHONE)])
    with env.client() as client:
        here = open_link(client, tokens["carol@example.com"])
        token = csrf(client.get(here).text, "send")
        client.post(here + "send", data={"csrf": token})
        env.clock.t += defaults.SMS_RESEND_SECONDS
        page = client.post(here + "send", data={"csrf": token})
        (_, old), (_, new) = sms_codes(env.sms_file)
        verify_token = csrf(page.text, "verify")
        if old != new:
            r = client.post(here + "verify", data={"csrf": verify_token, "code": old})
            assert r.status_code == 401
        env.clock.t += defaults.OTP_VALIDITY_SECONDS + 1
        r = client.post(here + "verify", data={"csrf": verify_token, "code": new})
        assert r.status_code == 401, "a code past its validity"


class _Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Webhook]]]:
    handler = type("Hook", (_Webhook,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/sms", handler
    server.shutdown()
    server.server_close()


def test_webhook_sms_backend(webhook: tuple[str, type[_Webhook]]) -> None:
    url, hook = webhook
    sender = WebhookSms(
        SmsWebhookConfig(
            url=url,
            auth_header="Authorization: Bearer s3cret",
            body='{"to": {{ phone }}, "message": {{ text }}, "from": "Hospital"}',
        )
    )
    sender.send(PHONE, 'Code 123456 "quoted"\nline')
    ((headers, body),) = hook.received
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "to": PHONE,
        "message": 'Code 123456 "quoted"\nline',
        "from": "Hospital",
    }
    hook.status = 500
    with pytest.raises(DeliveryError, match="500"):
        sender.send(PHONE, "x")


def test_sms_provider_failure_lets_the_visitor_retry(
    tmp_path: Path, webhook: tuple[str, type[_Webhook]]
) -> None:
    url, hook = webhook
    env = Env(tmp_path, {"sms": {"backend": "webhook", "webhook": {"url": url}}})
    env.portal.sms = WebhookSms(env.cfg.sms.webhook)
    _, tokens = env.save([rcpt("carol@example.com", "sms", phone=PHONE)])
    hook.status = 503
    with env.client() as client:
        here = open_link(client, tokens["carol@example.com"])
        token = csrf(client.get(here).text, "send")
        failed = client.post(here + "send", data={"csrf": token})
        assert failed.status_code == 503 and "could not be sent" in failed.text
        hook.status = 200
        ok = client.post(here + "send", data={"csrf": token})  # no waiting after a failure
        assert ok.status_code == 200 and 'id="notice"' in ok.text
        assert json.loads(hook.received[-1][1])["to"] == PHONE
    env.store.close()


def test_email_verification_code_goes_through_the_mta(env: Env) -> None:
    _, tokens = env.save([rcpt("s@example.org", "email")])
    with env.client() as client:
        here = open_link(client, tokens["s@example.org"])
        page = client.post(here + "send", data={"csrf": csrf(client.get(here).text, "send")})
        (out,) = env.mailer.sent
        assert out.recipients == ["s@example.org"] and out.sender == "noreply@hospital.example"
        mail = env.mailer.last()
        body = mail.get_body(("plain",))
        assert body is not None
        (code,) = re.findall(r"\b\d{6}\b", body.get_content())
        assert "BODY-MARKER" not in str(out.content)
        r = client.post(here + "verify", data={"csrf": csrf(page.text, "verify"), "code": code})
        assert r.status_code == 200 and shows_message(r)


# --- accounts ---------------------------------------------------------------------------------


def test_account_password_enrolment_then_two_factors(env: Env) -> None:
    created = accounts.add_recipient_account(env.store, "Erin@Example.net", "long enough password")
    assert created.address == "erin@example.net" and created.password is None
    _, tokens = env.save([rcpt("erin@example.net", "account")])
    with env.client() as client:
        here = open_link(client, tokens["erin@example.net"])
        page = client.get(here)
        assert 'name="totp"' not in page.text  # nothing enrolled yet: password first
        token = csrf(page.text, "verify")
        wrong = client.post(here + "verify", data={"csrf": token, "password": "nope"})
        assert wrong.status_code == 401
        enrol = client.post(
            here + "verify", data={"csrf": token, "password": "long enough password"}
        )
        assert enrol.status_code == 200 and "<svg" in enrol.text and not shows_message(enrol)
        assert client.get(here + "body").status_code == 200
        assert "BODY-MARKER" not in client.get(here + "body").text  # enrolment is not access
        secret_text = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', enrol.text)
        assert secret_text
        import base64

        b32 = secret_text.group(1).replace(" ", "")
        secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))
        totp = TOTP(secret, 6, SHA1(), 30, enforce_key_length=False)
        code = totp.generate(int(env.clock.t)).decode()
        bad = client.post(
            here + "enrol",
            data={"csrf": csrf(enrol.text, "enrol"), "secret": "tampered", "totp": code},
        )
        assert bad.status_code == 400
        sealed = re.search(r'name="secret" value="([^"]+)"', enrol.text)
        assert sealed
        done = client.post(
            here + "enrol",
            data={"csrf": csrf(enrol.text, "enrol"), "secret": sealed.group(1), "totp": code},
        )
        assert done.status_code == 200 and shows_message(done)
    account = env.store.account("erin@example.net")
    assert account is not None and account.has_totp
    with env.client() as again:
        here = open_link(again, tokens["erin@example.net"])
        page = again.get(here)
        assert 'name="totp"' in page.text
        token = csrf(page.text, "verify")
        r = again.post(
            here + "verify",
            data={"csrf": token, "password": "long enough password", "totp": "000000"},
        )
        assert r.status_code == 401
        enrol_code = code
        env.clock.t += 20  # the enrolment code is still inside its window, but spent
        r = again.post(
            here + "verify",
            data={"csrf": token, "password": "long enough password", "totp": enrol_code},
        )
        assert r.status_code == 401
        env.clock.t += 70
        code = totp.generate(int(env.clock.t)).decode()
        r = again.post(
            here + "verify", data={"csrf": token, "password": "long enough password", "totp": code}
        )
        assert r.status_code == 200 and shows_message(r)
    with env.client() as replay:  # the same code, seconds later, from another browser
        here = open_link(replay, tokens["erin@example.net"])
        token = csrf(replay.get(here).text, "verify")
        r = replay.post(
            here + "verify", data={"csrf": token, "password": "long enough password", "totp": code}
        )
        assert r.status_code == 401


def _to_enrolment(client: TestClient, token: str) -> tuple[str, Any]:
    """Open an account link and give the right password: the enrolment page."""
    here = open_link(client, token)
    page = client.get(here)
    r = client.post(
        here + "verify",
        data={"csrf": csrf(page.text, "verify"), "password": "long enough password"},
    )
    assert r.status_code == 200 and "<svg" in r.text
    return here, r


def _enrolment_answer(env: Env, page: Any) -> tuple[bytes, dict[str, str]]:
    """The secret an enrolment page offers, and the form that confirms it with a right code."""
    text = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', page.text)
    sealed = re.search(r'name="secret" value="([^"]+)"', page.text)
    assert text and sealed
    b32 = text.group(1).replace(" ", "")
    secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    code = TOTP(secret, 6, SHA1(), 30, enforce_key_length=False).generate(int(env.clock.t))
    form = {"csrf": csrf(page.text, "enrol"), "secret": sealed.group(1), "totp": code.decode()}
    return secret, form


def test_a_second_enrolment_never_replaces_the_authenticator(env: Env) -> None:
    """Two browsers got to the enrolment page (the password is all it takes); once one has
    enrolled, the other's enrolment page enrols nothing and asks for both factors instead."""
    accounts.add_recipient_account(env.store, "erin@example.net", "long enough password")
    mid, tokens = env.save([rcpt("erin@example.net", "account")])
    with env.client() as user, env.client() as other:
        here, user_page = _to_enrolment(user, tokens["erin@example.net"])
        _, other_page = _to_enrolment(other, tokens["erin@example.net"])
        user_secret, user_form = _enrolment_answer(env, user_page)
        assert shows_message(user.post(here + "enrol", data=user_form))
        env.clock.t += 3600
        other_secret, other_form = _enrolment_answer(env, other_page)
        refused = other.post(here + "enrol", data=other_form)
        assert refused.status_code == 409 and not shows_message(refused)
        assert "already set up for this account" in refused.text
        assert 'name="totp"' in refused.text and "<svg" not in refused.text  # sign in, both
        assert env.store.totp_secret("erin@example.net") == user_secret != other_secret
        again = other.get(here)  # the enrolment pass is gone: the sign-in page
        assert again.status_code == 200 and 'name="totp"' in again.text
        assert "<svg" not in again.text and not shows_message(again)
    with env.client() as stale:  # an enrolment pass from before an enrolment elsewhere
        accounts.add_recipient_account(env.store, "erin@example.net", "long enough password")
        here, _ = _to_enrolment(stale, tokens["erin@example.net"])
        assert env.store.enrol_totp("erin@example.net", user_secret)
        assert not env.store.enrol_totp("erin@example.net", other_secret)
        shown = stale.get(here)
        assert shown.status_code == 409 and "already set up for this account" in shown.text
        assert "<svg" not in shown.text and 'name="totp"' in shown.text
    assert env.store.totp_secret("erin@example.net") == user_secret
    events = [e.event for e in env.store.events(mid)]
    assert events.count("enrol-refused") == 2


def test_an_account_reset_ends_the_sessions_signed_in_with_the_old_credentials(
    env: Env,
) -> None:
    """`zivmilter account add ADDRESS --recipient --password` again (the admin's reset after a
    lost phone or a leaked password) ends the sessions the old password and authenticator
    opened, wherever their cookies went, as disabling the account does."""
    accounts.add_recipient_account(env.store, "erin@example.net", "long enough password")
    _, tokens = env.save([rcpt("erin@example.net", "account")])
    with env.client() as client, env.client() as thief:
        here, page = _to_enrolment(client, tokens["erin@example.net"])
        _, form = _enrolment_answer(env, page)
        assert shows_message(client.post(here + "enrol", data=form))
        thief.cookies.update(client.cookies)
        assert shows_message(thief.get(here))
        accounts.add_recipient_account(env.store, "erin@example.net", "a new long password")
        for path in ("", "body", "attachment/3"):
            r = thief.get(here + path)
            assert r.status_code == 403 and "BODY-MARKER" not in r.text


def test_recipient_accounts_refuse_weak_passwords_and_sender_accounts(env: Env) -> None:
    with pytest.raises(ValueError, match="at least"):
        accounts.add_recipient_account(env.store, "x@example.net", "short")
    generated = accounts.add_recipient_account(env.store, "y@example.net")
    assert generated.password and len(generated.password) >= accounts.MIN_PASSWORD_LENGTH
    assert generated.password not in repr(generated)
    env.store.add_account("alice@hospital.example", "sender")
    with pytest.raises(ValueError, match="sender account"):
        accounts.add_recipient_account(env.store, "alice@hospital.example", "long enough password")


# --- replies ----------------------------------------------------------------------------------


def test_reply_is_stored_and_sent_to_the_sender(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        page = client.get(here)
        empty = client.post(here + "reply", data={"csrf": csrf(page.text, "reply"), "text": "  "})
        assert empty.status_code == 400
        r = client.post(
            here + "reply",
            data={"csrf": csrf(page.text, "reply"), "text": "REPLY-MARKER thank you"},
            files=[("files", ("scan.pdf", PDF, "application/pdf"))],
        )
        assert r.status_code == 200 and 'id="notice"' in r.text
        (out,) = env.mailer.sent
        assert out.recipients == ["alice@hospital.example"]
        reply = env.mailer.last()
        assert reply["In-Reply-To"] == "<lab-1@hospital.example>"
        assert reply["Reply-To"] == "bob@example.net"
        text = reply.get_body(("plain",))
        assert text is not None and "REPLY-MARKER thank you" in text.get_content()
        (attached,) = reply.iter_attachments()
        assert attached.get_filename() == "scan.pdf" and attached.get_content() == PDF
        (stored,) = env.store.replies(env.rid(mid, "bob@example.net"))
        assert stored.sent_at is not None
        for stale in ("later", "refused"):
            page = client.get(f"{here}?replied={stale}")
            assert 'id="notice"' not in page.text and 'id="error"' not in page.text
        blob = env.store.open_reply(stored.id)
        assert blob is not None and b"REPLY-MARKER" in blob.read()
        # The MTA cannot take it now: it is kept for `zivmilter maintenance`, and the writer is
        # told not to send it again (a reload does not write it twice).
        env.mailer.fail = True
        page = client.get(here)
        later = client.post(
            here + "reply", data={"csrf": csrf(page.text, "reply"), "text": "second"}
        )
        assert later.status_code == 200 and later.url.query == b"replied=later"
        assert "you do not need to send it again" in later.text
        assert later.text.count("Not sent yet") == 1
        assert len(client.get(str(later.url)).text.split("<li>You replied on")) == 3
        rid = env.rid(mid, "bob@example.net")
        assert [r.sent_at is None for r in env.store.replies(rid)] == [False, True]
        assert [r.id for r in env.store.unsent_replies()] == [env.store.replies(rid)[1].id]


def test_a_reply_the_mta_refuses_for_good_is_not_offered_again(env: Env) -> None:
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    env.mailer.refuse = True
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        page = client.get(here)
        r = client.post(here + "reply", data={"csrf": csrf(page.text, "reply"), "text": "hello"})
        assert r.status_code == 200 and r.url.query == b"replied=refused"
        assert 'id="error"' in r.text and "refused it, so it has not been sent" in r.text
        assert "Refused by the mail server" in r.text and "Not sent yet" not in r.text
        # the notes of ?replied= say only what is true of the last reply
        for stale in ("1", "later"):
            page = client.get(f"{here}?replied={stale}")
            assert 'id="notice"' not in page.text
            assert 'id="error"' not in page.text
    (reply,) = env.store.replies(env.rid(mid, "bob@example.net"))
    assert reply.sent_at is None and reply.refused_at is not None
    assert env.store.unsent_replies() == []  # maintenance leaves it alone
    events = [e.event for e in env.store.events(mid)]
    assert "reply-undeliverable" in events and "reply-send-failed" not in events


def test_a_reply_to_a_relayed_message_reaches_its_author(env: Env) -> None:
    """An application relay sends with a bounce envelope sender: the gateway stores the author
    (From), so the portal names the author and the secure reply is delivered to them."""
    relay = RecordingMailer()
    cfg = make_config(
        {"submission": {"any_address_of_own_domains": True}, "portal": {"base_url": BASE + "/"}}
    )
    gateway = Gateway(cfg, facts_from_mapping({}), env.store, relay, hostname="gw.test")
    raw = (
        "From: Dr. Alice <Alice@hospital.example>\r\nTo: bob@example.net\r\n"
        "Subject: Lab results\r\nMessage-ID: <relayed-1@hospital.example>\r\n"
        f"zivver-access-right: bob@example.net access-code {CODE}\r\n\r\nBODY-MARKER\r\n"
    ).encode()
    head = raw.partition(b"\r\n\r\n")[0]
    headers = [(n, v) for n, _, v in (f.partition(": ") for f in head.decode().split("\r\n"))]
    plan = gateway.process(
        Transaction(
            "QID7", "<bounces+7f3a@hospital.example>", ["<bob@example.net>"],
            headers, io.BytesIO(raw), len(head) + 4, "127.0.0.1",
        )
    )  # fmt: skip
    assert plan.replace_body is not None  # the notification to bob
    token = re.search(rb"/m/([A-Za-z0-9_-]{16,})\r\n", plan.replace_body)
    assert token
    with env.client() as client:
        here = open_link(client, token.group(1).decode())
        assert "alice@hospital.example" in client.get(here).text
        assert "bounces" not in client.get(here).text
        here = verified(env, client, token.group(1).decode())
        page = client.get(here)
        r = client.post(here + "reply", data={"csrf": csrf(page.text, "reply"), "text": "thanks"})
        assert r.status_code == 200 and 'id="notice"' in r.text
    (out,) = env.mailer.sent
    assert out.recipients == ["alice@hospital.example"]
    assert env.mailer.last()["To"] == "alice@hospital.example"


def test_oversized_reply_is_refused_before_reading_it(env: Env) -> None:
    _, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        r = client.post(
            here + "reply",
            content=b"x",
            headers={"content-length": str(defaults.PORTAL_MAX_REPLY_BYTES * 2)},
        )
        assert r.status_code == 413


# --- languages --------------------------------------------------------------------------------


def test_language_follows_the_notification_and_can_be_switched(env: Env) -> None:
    _, tokens = env.save([code_rcpt("bob@example.net"), code_rcpt("piet@example.nl")])
    with env.client() as client:
        here = open_link(client, tokens["piet@example.nl"])
        page = client.get(here)
        assert '<html lang="nl">' in page.text and "Toegangscode" in page.text
        en = client.get(here + "?lang=en")
        assert '<html lang="en">' in en.text and "Access code" in en.text
        assert "zv_lang=en" in en.headers["set-cookie"]
        assert '<html lang="en">' in client.get(here).text  # the choice sticks
    with env.client() as client:
        here = open_link(client, tokens["bob@example.net"])
        assert '<html lang="en">' in client.get(here).text
        assert "Bevestig" in client.get(here + "?lang=nl").text


# --- large attachments of direct deliveries ---------------------------------------------------


def test_large_attachment_link_needs_email_verification(env: Env) -> None:
    mid, _ = env.save(
        [
            NewRecipient("dan@partner.example", 1, "direct_delivery", "direct", "B3", level="pkix"),
            NewRecipient("eve@partner.example", 1, "direct_delivery", "direct", "B3", level="pkix"),
        ]
    )
    big = os.urandom(3 * 1024 * 1024 + 17)
    saved = env.store.save_attachment(mid, "scan big.bin", "application/octet-stream", big)
    with env.client() as client:
        first = client.get(f"/d/{saved.token}")
        here = re.search(r'url=([^"]+)"', first.text)
        assert first.status_code == 200 and here
        page = client.get(here.group(1))
        assert 'name="address"' in page.text
        assert client.get(here.group(1) + "file").status_code == 200  # back to the questions
        assert client.get(here.group(1) + "file").headers["content-type"].startswith("text/html")
        # Someone who is not a recipient learns nothing and gets no code.
        r = client.post(
            here.group(1) + "start",
            data={"csrf": csrf(page.text, "start"), "address": "mallory@evil.example"},
        )
        r = client.post(here.group(1) + "send", data={"csrf": csrf(r.text, "send")})
        assert r.status_code == 200 and env.mailer.sent == []
        r = client.post(
            here.group(1) + "verify", data={"csrf": csrf(r.text, "verify"), "code": "123456"}
        )
        assert r.status_code == 401
        # The recipient.
        r = client.post(
            here.group(1) + "start",
            data={"csrf": csrf(r.text, "start"), "address": "Dan@Partner.example"},
        )
        r = client.post(here.group(1) + "send", data={"csrf": csrf(r.text, "send")})
        (out,) = env.mailer.sent
        assert out.recipients == ["dan@partner.example"]
        body = env.mailer.last().get_body(("plain",))
        assert body is not None
        (code,) = re.findall(r"\b\d{6}\b", body.get_content())
        r = client.post(
            here.group(1) + "verify", data={"csrf": csrf(r.text, "verify"), "code": code}
        )
        assert r.status_code == 200 and 'id="download"' in r.text
        download = client.get(here.group(1) + "file")
        assert download.status_code == 200 and download.content == big
        assert "filename*=UTF-8''scan%20big.bin" in download.headers["content-disposition"]
    events = [(e.event, e.recipient) for e in env.store.events(mid)]
    assert ("attachment-downloaded", "dan@partner.example") in events


def _download(env: Env, token: str, address: str) -> Any:
    """Open a large-attachment link, verify as `address` by email code, fetch the file."""
    with env.client() as client:
        first = client.get(f"/d/{token}")
        target = re.search(r'url=([^"]+)"', first.text)
        assert target
        here = target.group(1)
        page = client.get(here)
        if page.status_code != 200:
            return page
        r = client.post(here + "start", data={"csrf": csrf(page.text, "start"), "address": address})
        r = client.post(here + "send", data={"csrf": csrf(r.text, "send")})
        body = env.mailer.last().get_body(("plain",))
        assert body is not None
        code = re.findall(r"\b\d{6}\b", body.get_content())[0]
        r = client.post(here + "verify", data={"csrf": csrf(r.text, "verify"), "code": code})
        assert r.status_code == 200 and 'id="download"' in r.text
        return client.get(here + "file")


@pytest.mark.parametrize("end", ["revoke", "expiry"])
def test_revoke_and_expiry_end_the_links_but_not_direct_downloads(env: Env, end: str) -> None:
    """SPEC 8: notification messages can be revoked and expire, direct-delivered ones cannot;
    so the download link of a direct copy keeps working when the links of the same message end."""
    expires = datetime.fromtimestamp(env.clock.t, UTC) + timedelta(days=30)
    mid, tokens = env.save(
        [
            code_rcpt("bob@example.net"),
            NewRecipient("dan@partner.example", 1, "direct_delivery", "direct", "B3", level="pkix"),
        ],
        expires_at=expires,
    )
    big = os.urandom(1024 * 1024 + 3)
    saved = env.store.save_attachment(mid, "scan.bin", "application/octet-stream", big)
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        if end == "revoke":
            assert env.store.revoke(mid, "test")
        else:
            env.clock.t += 31 * 24 * 3600
            assert env.store.purge_expired() == 1
        open_link(client, tokens["bob@example.net"])
        page = client.get(here)
        gone_text = "withdrawn" if end == "revoke" else "expired"
        assert page.status_code == 410 and gone_text in page.text and not shows_message(page)
    download = _download(env, saved.token, "dan@partner.example")
    assert download.status_code == 200 and download.content == big
    assert env.store.open_content(mid) is None  # the original is gone: nobody needs it now
    events = [(e.event, e.recipient) for e in env.store.events(mid)]
    assert ("attachment-downloaded", "dan@partner.example") in events


def test_attachment_names_stay_out_of_the_audit_log_and_the_logs(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """File names often name a patient: after `revoke` no audit event and no log line keeps
    one, neither of a large attachment kept by the gateway for a direct copy (downloaded
    through its link) nor of an attachment of a message opened in the portal."""
    name = "Jansen-Pieter-MRI-1961.pdf"
    cfg = make_config(
        {
            "submission": {"any_address_of_own_domains": True},
            "portal": {"base_url": BASE + "/"},
            "policy": {
                "outbound_direct_delivery": {"domains": ["partner.example"]},
                "large_attachment_bytes": 2000,
            },
        }
    )
    facts = facts_from_mapping({"transport": {"partner.example": "pkix"}})
    gateway = Gateway(cfg, facts, env.store, RecordingMailer(), hostname="gw.test")
    msg = EmailMessage()
    msg["From"] = "alice@hospital.example"
    msg["To"] = "dan@partner.example"
    msg["Subject"] = "Scan"
    msg["Message-ID"] = "<scan-1@hospital.example>"
    msg.set_content("The scan is attached.")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=name)
    raw = msg.as_bytes(policy=policy.SMTP)
    head = raw.partition(b"\r\n\r\n")[0]
    headers = [(n, v) for n, _, v in (f.partition(": ") for f in head.decode().split("\r\n"))]
    with caplog.at_level("DEBUG"):
        plan = gateway.process(
            Transaction(
                "QID9", "<alice@hospital.example>", ["<dan@partner.example>"],
                headers, io.BytesIO(raw), len(head) + 4, "127.0.0.1",
            )
        )  # fmt: skip
        assert plan.replace_body is not None  # the direct copy, its attachment a link
        token = re.search(rb"/d/([A-Za-z0-9_-]{16,})", plan.replace_body)
        assert token
        download = _download(env, token.group(1).decode(), "dan@partner.example")
        assert download.status_code == 200 and download.content == PDF
        mid, tokens = env.save([code_rcpt("bob@example.net")])  # its attachment: résults.pdf
        with env.client() as client:
            here = verified(env, client, tokens["bob@example.net"])
            link = re.search(r'href="([^"]+/attachment/\d+)"', client.get(here).text)
            assert link and client.get(link.group(1)).status_code == 200
        (direct,) = env.store.find_messages("<scan-1@hospital.example>")
        for message_id in (direct.id, mid):
            env.store.revoke(message_id, "test")
    for message_id in (direct.id, mid):
        events = env.store.events(message_id)
        assert "attachment-downloaded" in [e.event for e in events]
        for e in events:
            assert "Jansen" not in e.detail and "sults" not in e.detail, e
    assert "Jansen" not in caplog.text and "sults.pdf" not in caplog.text


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_every_page_renders_in_both_languages(env: Env, lang: str) -> None:
    accounts.add_recipient_account(env.store, "erin@example.net", "long enough password")
    mid, tokens = env.save(
        [
            code_rcpt("bob@example.net"),
            rcpt("carol@example.com", "sms", phone=PHONE),
            rcpt("s@example.org", "email"),
            rcpt("erin@example.net", "account"),
            rcpt("gone@example.net", "account"),  # no account (any more)
            NewRecipient("dan@partner.example", 1, "x", "direct", "A4", level="pkix"),
        ]
    )
    saved = env.store.save_attachment(mid, "big.bin", "application/octet-stream", b"x" * 100)
    q = f"?lang={lang}"
    marker = f'<html lang="{lang}">'
    with env.client() as client:
        assert marker in client.get("/nowhere" + q).text
        assert marker in client.get("/m/" + "A" * 32 + q).text
        assert marker in client.get("/r/99/" + q).text
        for address, status in (
            ("bob@example.net", 200), ("carol@example.com", 200), ("s@example.org", 200),
            ("erin@example.net", 200), ("gone@example.net", 200),
        ):  # fmt: skip
            here = open_link(client, tokens[address])
            page = client.get(here + q)
            assert page.status_code == status and marker in page.text, address
        here = verified(env, client, tokens["bob@example.net"])
        assert marker in client.get(here + q).text
        here = open_link(client, tokens["erin@example.net"])
        page = client.get(here + q)
        enrol = client.post(
            here + "verify",
            data={"csrf": csrf(page.text, "verify"), "password": "long enough password"},
        )
        assert marker in enrol.text and "<svg" in enrol.text
        first = client.get(f"/d/{saved.token}")
        target = re.search(r'url=([^"]+)"', first.text)
        assert target
        assert marker in client.get(target.group(1) + q).text


def test_enrolment_page_keeps_its_secret_when_shown_again(env: Env) -> None:
    # The recipient scans the QR code, then the page is reloaded (or its language switched):
    # the code from the app they scanned must still be the right one.
    accounts.add_recipient_account(env.store, "fay@example.net", "long enough password")
    mid_fay, tokens = env.save([rcpt("fay@example.net", "account")])

    def sign_in(client: Any) -> tuple[str, str]:
        here = open_link(client, tokens["fay@example.net"])
        token = csrf(client.get(here).text, "verify")
        form = {"csrf": token, "password": "long enough password"}
        page = client.post(here + "verify", data=form)
        found = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', page.text)
        assert found
        return here, found.group(1)

    with env.client() as client:
        here, first = sign_in(client)
        again = client.get(here)
        shown = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', again.text)
        assert shown and shown.group(1) == first
        b32 = first.replace(" ", "")
        totp = TOTP(base64.b32decode(b32 + "=" * (-len(b32) % 8)), 6, SHA1(), 30,
                    enforce_key_length=False)  # fmt: skip
        sealed = re.search(r'name="secret" value="([^"]+)"', again.text)
        assert sealed
        token = csrf(again.text, "enrol")
        wrong_form = {"csrf": token, "secret": sealed.group(1), "totp": "000000"}
        wrong = client.post(here + "enrol", data=wrong_form, follow_redirects=False)
        assert wrong.status_code == 303
        assert wrong.headers["location"].endswith("?refused=wrong_code")
        for _ in range(2):  # reloading the "not right" page sends nothing again
            shown = client.get(wrong.headers["location"])
            assert shown.status_code == 401 and first in shown.text
        done = client.post(
            here + "enrol",
            data={
                "csrf": csrf(again.text, "enrol"),
                "secret": sealed.group(1),
                "totp": totp.generate(int(env.clock.t)).decode(),
            },
        )
        assert done.status_code == 200 and shows_message(done)
    fay = env.store.recipient(env.rid(mid_fay, "fay@example.net"))
    assert fay is not None and fay.failed_attempts == 1
    with env.client() as other:  # a new sign-in is a new enrolment: another secret
        assert accounts.add_recipient_account(env.store, "gus@example.net", "long enough password")
        _, more = env.save([rcpt("gus@example.net", "account")])
        here = open_link(other, more["gus@example.net"])
        token = csrf(other.get(here).text, "verify")
        form = {"csrf": token, "password": "long enough password"}
        page = other.post(here + "verify", data=form)
        found = re.search(r'<code id="secret">([A-Z2-7 ]+)</code>', page.text)
        assert found and found.group(1) != first


# --- issue 15: hardening ----------------------------------------------------------------------


@pytest.mark.parametrize("root", ["", "/secure"])
def test_trailing_slash_redirect_ignores_the_host_header(tmp_path: Path, root: str) -> None:
    """Issue 15 item 14: a Host header of the attacker's choosing never reaches Location."""
    env = Env(tmp_path, {"portal": {"base_url": f"{BASE}{root}/"}})
    try:
        _, tokens = env.save([code_rcpt("bob@example.net")])
        with env.client() as client:
            here = open_link(client, tokens["bob@example.net"])
            r = client.get(
                BASE + here.rstrip("/") + "?lang=nl",
                headers={"host": "evil.example"},
                follow_redirects=False,
            )
            assert r.status_code in (307, 308), r.text
            assert r.headers["location"] == f"{BASE}{here}?lang=nl"
            assert "evil" not in r.headers["location"]
            assert client.get(BASE + here.rstrip("/")).status_code == 200  # still leads there
    finally:
        env.store.close()


def _post_counting_reads(env: Env, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """POST a 20 MB reply straight to the ASGI app; the status and the body bytes it read."""
    import anyio

    chunk = b"x" * (1024 * 1024)
    read = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= 20 * len(chunk):
            return {"type": "http.disconnect"}
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": read < 20 * len(chunk)}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("portal.test", 80), "client": ("127.0.0.1", 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    anyio.run(env.app, scope, receive, send)
    return status, read


def test_a_reply_without_a_session_is_refused_before_its_body_is_read(env: Env) -> None:
    """Issue 15 item 13: 20 MB without a cookie (or from another origin) are not parsed."""
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    rid = env.rid(mid, "bob@example.net")
    form = {"content-type": "multipart/form-data; boundary=b", "content-length": str(20 << 20)}
    status, read = _post_counting_reads(env, f"/r/{rid}/reply", form)
    assert status == 403 and read == 0
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    status, read = _post_counting_reads(
        env, here + "reply", {**form, "cookie": cookie, "origin": "https://evil.example"}
    )
    assert status == 403 and read == 0
    assert env.store.replies(rid) == []


def test_sign_out_and_account_disable_end_copied_sessions(env: Env) -> None:
    """Issue 15 item 11: a copy of a session cookie stops reading when its session ends."""
    accounts.add_recipient_account(env.store, "carol@example.com", "long enough password")
    _, tokens = env.save([code_rcpt("bob@example.net"), code_rcpt("carol@example.com")])
    for address in ("bob@example.net", "carol@example.com"):
        with env.client() as client, env.client() as thief:
            here = verified(env, client, tokens[address])
            thief.cookies.update(client.cookies)
            assert shows_message(thief.get(here))
            if address == "bob@example.net":
                page = client.get(here)
                out = client.post(here + "logout", data={"csrf": csrf(page.text, "logout")})
                assert out.status_code == 200
            else:  # what `zivmilter account disable` does
                assert env.store.set_account_active(address, False)
            for path in ("", "body", "attachment/3"):
                r = thief.get(here + path)
                assert r.status_code == 403 and "BODY-MARKER" not in r.text
            # signing in again works (for bob: the account only counts for carol)
            if address == "bob@example.net":
                assert verified(env, thief, tokens[address])


def test_reply_uploads_keep_only_a_bare_type_and_no_mail_inside(tmp_path: Path) -> None:
    """Issue 15 item 5: the uploader's Content-Type parameters never reach the sender, mail
    and multipart uploads are refused, and replies go to the content-filtered listener."""
    env = Env(tmp_path)
    codes = env.mailer
    env.portal.reply_mailer = replies = RecordingMailer()
    try:
        mid, tokens = env.save([code_rcpt("bob@example.net")])
        with env.client() as client:
            here = verified(env, client, tokens["bob@example.net"])
            for bad in ("message/rfc822", "Multipart/Mixed; boundary=x"):
                page = client.get(here)
                r = client.post(
                    here + "reply",
                    data={"csrf": csrf(page.text, "reply"), "text": "see attached"},
                    files=[("files", ("fwd.eml", b"From: ceo@hospital.example\r\n\r\nhi", bad))],
                )
                assert r.status_code == 400 and "cannot be attached to a reply" in r.text
            assert replies.sent == [] and env.store.replies(env.rid(mid, "bob@example.net")) == []
            page = client.get(here)
            r = client.post(
                here + "reply",
                data={"csrf": csrf(page.text, "reply"), "text": "notes"},
                files=[("files", ("notes.txt", b"hello", 'text/plain; name="other.exe"'))],
            )
            assert r.status_code == 200 and 'id="notice"' in r.text
        assert codes.sent == []  # not through the milter-free listener of copies
        (attached,) = replies.last().iter_attachments()
        assert attached["Content-Type"].split(";")[0] == "text/plain"
        assert "other.exe" not in str(attached) and attached.get_filename() == "notes.txt"
    finally:
        env.store.close()


def _reply(client: TestClient, here: str, text: str, data: bytes = b"") -> Any:
    page = client.get(here)
    files = [("files", ("scan.bin", data, "application/octet-stream"))] if data else None
    return client.post(
        here + "reply", data={"csrf": csrf(page.text, "reply"), "text": text}, files=files
    )


def test_replies_are_limited_per_link_and_per_recipient(tmp_path: Path) -> None:
    """Issue 15 item 4: quotas by number and bytes, per link and per recipient address, per
    hour and per day; the page says plainly which one was reached."""
    limits = {"link_per_hour": 2, "recipient_per_day": 3, "recipient_bytes_per_hour": 300_000}
    env = Env(tmp_path, {"portal": {"base_url": BASE + "/", "reply_limits": limits}})
    try:
        _, first = env.save([code_rcpt("bob@example.net")])
        _, second = env.save([code_rcpt("bob@example.net")])
        with env.client() as client:
            here = verified(env, client, first["bob@example.net"])
            assert _reply(client, here, "one").status_code == 200
            assert _reply(client, here, "two").status_code == 200
            r = _reply(client, here, "three")
            assert r.status_code == 429 and "limit for replies in one hour" in r.text
            assert len(env.mailer.sent) == 2
            env.clock.t += 3601  # a new hour for this link (and a new session)
            here = verified(env, client, first["bob@example.net"])
            assert _reply(client, here, "three").status_code == 200
            # the address's day: three replies over all its links
            other = verified(env, client, second["bob@example.net"])
            r = _reply(client, other, "four")
            assert r.status_code == 429 and "limit for replies in one day" in r.text
            nl = client.get(other + "?lang=nl")
            assert nl.status_code == 200
            r = _reply(client, other, "vier")
            assert "limiet voor antwoorden op één dag" in r.text
            env.clock.t += 24 * 3600
            other = verified(env, client, second["bob@example.net"])
            # bytes: 200 kB fits the hour, another 200 kB does not
            assert _reply(client, other, "big", os.urandom(200_000)).status_code == 200
            r = _reply(client, other, "bigger", os.urandom(200_000))
            assert r.status_code == 429 and "limiet voor antwoorden in één uur" in r.text
        assert len(env.mailer.sent) == 4
    finally:
        env.store.close()


def test_a_reply_is_refused_while_the_store_is_short_of_disk(tmp_path: Path) -> None:
    limits = {"min_free_bytes": 1 << 60}  # more than any disk has free
    env = Env(tmp_path, {"portal": {"base_url": BASE + "/", "reply_limits": limits}})
    try:
        mid, tokens = env.save([code_rcpt("bob@example.net")])
        with env.client() as client:
            here = verified(env, client, tokens["bob@example.net"])
            r = _reply(client, here, "hello")
            assert r.status_code == 503 and "out of storage space" in r.text
        assert env.mailer.sent == [] and env.store.replies(env.rid(mid, "bob@example.net")) == []
    finally:
        env.store.close()
    with pytest.raises(config_mod.ConfigError, match="link_per_hour"):
        config_mod.from_mapping(
            {
                "organization": {"domains": ["h.example"]},
                "portal": {"reply_limits": {"link_per_hour": 0}},
            }
        )


def test_the_date_is_written_in_the_page_language(env: Env) -> None:
    """Issue 15, a recipient's view: the Dutch page showed the raw English Date header."""
    msg = message_from_bytes(message_bytes(), policy=policy.default)
    msg["Date"] = "Tue, 24 Nov 2026 10:05:00 +0100"
    _, tokens = env.save(
        [code_rcpt("bob@example.net"), code_rcpt("piet@example.nl")],
        content=msg.as_bytes(policy=policy.SMTP),
    )
    with env.client() as client:
        page = client.get(verified(env, client, tokens["piet@example.nl"]))
        date = re.search(r'<dd id="date">([^<]*)</dd>', page.text)
        assert date and date.group(1) == "dinsdag 24 november 2026 om 10:05 (UTC+01:00)"
        assert "Tue" not in page.text and "Nov 2026" not in page.text
    with env.client() as client:
        page = client.get(verified(env, client, tokens["bob@example.net"]))
        assert '<dd id="date">Tuesday 24 November 2026, 10:05 (UTC+01:00)</dd>' in page.text
    _, tokens = env.save([code_rcpt("piet@example.nl")])  # no Date: when it was received
    with env.client() as client:
        page = client.get(verified(env, client, tokens["piet@example.nl"]))
        assert '<dd id="date">dinsdag 24 november 2026 om 09:00 (UTC+00:00)</dd>' in page.text


def test_an_attachment_of_a_withdrawn_message_says_withdrawn(env: Env) -> None:
    """Issue 15, a recipient's view: clicked after a revoke on another device, the link must
    show the page that says so, not be saved as a file (no `download` attribute)."""
    mid, tokens = env.save([code_rcpt("bob@example.net")])
    with env.client() as client:
        here = verified(env, client, tokens["bob@example.net"])
        page = client.get(here)
        link = re.search(r'<a href="([^"]*/attachment/\d+)"([^>]*)>', page.text)
        assert link and "download" not in link.group(2)
        assert env.store.revoke(mid, "test")
        gone = client.get(link.group(1))
        assert gone.status_code == 410 and "withdrawn" in gone.text
        assert gone.headers["content-type"].startswith("text/html")


def _claim(env: Env, client: Any, token: str, address: str) -> tuple[str, Any]:
    """Open a shared download link in `client` and say "I am `address`": (page URL, page)."""
    first = client.get(f"/d/{token}")
    target = re.search(r'url=([^"]+)"', first.text)
    assert target
    here = target.group(1)
    page = client.get(here)
    r = client.post(here + "start", data={"csrf": csrf(page.text, "start"), "address": address})
    return here, r


def _mailed_code(env: Env) -> str:
    body = env.mailer.last().get_body(("plain",))
    assert body is not None
    return str(re.findall(r"\b\d{6}\b", body.get_content())[0])


def _answer(client: Any, here: str, page: Any, **fields: str) -> tuple[Any, Any]:
    """Post an answer as the browser does: (the answer's redirect, the page it leads to). A
    locked page has no form: then the answer is posted with the form's token of before, as a
    second tab or a script would (the pass, and so the token, stays the same)."""
    found = re.search(r'action="[^"]*/verify"[^>]*>\s*<input type="hidden" name="csrf" '
                      r'value="([^"]+)"', page.text)  # fmt: skip
    if found:
        client.verify_token = found.group(1)
    sent = client.post(
        here + "verify",
        data={"csrf": client.verify_token, **fields},
        follow_redirects=False,
    )
    return sent, client.get(sent.headers["location"])


@pytest.mark.parametrize("kind", ["email", "account"])
def test_a_shared_download_link_answers_recipients_and_others_alike(env: Env, kind: str) -> None:
    """Issue 15 item 12: the whole sequence a claimant sees (the form, asking for codes, also
    too soon again, wrong answers up to the lock, the locked page, asking again while locked)
    is the same whether the claimed address is a recipient or not; with an account, both get
    the password form."""
    recipient, other = "dan@partner.example", "mallory@evil.example"
    mid, _ = env.save([NewRecipient(recipient, 1, "direct_delivery", "direct", "B3", level="pkix")])
    saved = env.store.save_attachment(mid, "scan.bin", "application/octet-stream", b"x" * 99)
    if kind == "account":
        for address in (recipient, other):
            accounts.add_recipient_account(env.store, address, "long enough password")
            assert env.store.enrol_totp(address, os.urandom(20))
    wrong = {"code": "000000"} if kind == "email" else {"password": "wrong", "totp": "000000"}

    def answers(address: str) -> list[tuple[int, str, str]]:
        seen: list[tuple[int, str, str]] = []

        def see(r: Any) -> None:
            where = r.headers.get("location", str(r.url))
            seen.append((r.status_code, where, re.sub(r'value="[^"]+"', "", r.text)))

        with env.client() as client:
            here, r = _claim(env, client, saved.token, address)
            see(r)
            send = csrf(r.text, "send") if kind == "email" else ""
            if kind == "email":
                for _ in range(2):  # the second one too soon for a new code
                    r = client.post(here + "send", data={"csrf": send})
                    see(r)
            for _ in range(defaults.LOCKOUT_AFTER + 1):  # the fifth locks, the sixth is refused
                sent, r = _answer(client, here, r, **wrong)
                see(sent)
                see(r)
            assert 'id="locked"' in r.text and r.status_code == 429
            if kind == "email":
                see(client.post(here + "send", data={"csrf": send}))  # no form: a script
            see(client.get(here))
        return seen

    assert answers(recipient) == answers(other)
    assert len(env.mailer.sent) == (1 if kind == "email" else 0)  # one code went out, to dan


def test_a_strangers_wrong_codes_do_not_lock_the_recipient_out(env: Env) -> None:
    """Issue 15 item 12: whoever claims the recipient's address on the link locks only their
    own claim; the recipient's claim has its own code and verifies."""
    mid, _ = env.save(
        [NewRecipient("dan@partner.example", 1, "direct_delivery", "direct", "B3", level="pkix")]
    )
    saved = env.store.save_attachment(mid, "scan.bin", "application/octet-stream", b"x" * 99)
    with env.client() as stranger:
        here, r = _claim(env, stranger, saved.token, "dan@partner.example")
        r = stranger.post(here + "send", data={"csrf": csrf(r.text, "send")})
        for _ in range(defaults.LOCKOUT_AFTER):
            _, r = _answer(stranger, here, r, code="000000")
        assert r.status_code == 429 and 'id="locked"' in r.text
        with env.client() as dan:
            there, page = _claim(env, dan, saved.token, "dan@partner.example")
            assert 'id="locked"' not in page.text
            page = dan.post(there + "send", data={"csrf": csrf(page.text, "send")})
            code = _mailed_code(env)
            _, done = _answer(dan, there, page, code=code)
            assert done.status_code == 200 and 'id="download"' in done.text
            assert dan.get(there + "file").content == b"x" * 99
        # The code mailed for dan's claim opens nothing in the stranger's (locked or not).
        env.clock.t += defaults.LOCKOUT_BASE_SECONDS + 1
        _, r = _answer(stranger, here, stranger.get(here), code=code)
        assert r.status_code == 401 and 'id="download"' not in r.text


def test_brute_force_on_a_shared_link_is_locked_after_the_same_count(env: Env) -> None:
    """One claimant: locked after LOCKOUT_AFTER wrong codes, and then even the right code is
    refused; the lock spends the code. Many claimants: an address gets so many codes an hour
    over all claims (defaults.CLAIM_CODES_PER_HOUR), each good for LOCKOUT_AFTER answers."""
    mid, _ = env.save(
        [NewRecipient("dan@partner.example", 1, "direct_delivery", "direct", "B3", level="pkix")]
    )
    saved = env.store.save_attachment(mid, "scan.bin", "application/octet-stream", b"x" * 99)
    with env.client() as client:
        here, r = _claim(env, client, saved.token, "dan@partner.example")
        r = client.post(here + "send", data={"csrf": csrf(r.text, "send")})
        code = _mailed_code(env)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        for n in range(defaults.LOCKOUT_AFTER):
            _, r = _answer(client, here, r, code=wrong)
            assert r.status_code == (429 if n == defaults.LOCKOUT_AFTER - 1 else 401)
        _, r = _answer(client, here, r, code=code)
        assert r.status_code == 429 and 'id="download"' not in r.text
        env.clock.t += defaults.LOCKOUT_BASE_SECONDS + 1
        _, r = _answer(client, here, client.get(here), code=code)
        assert r.status_code == 401  # spent with the lock
    for _ in range(defaults.CLAIM_CODES_PER_HOUR + 2):
        with env.client() as client:
            here, r = _claim(env, client, saved.token, "dan@partner.example")
            client.post(here + "send", data={"csrf": csrf(r.text, "send")})
    assert len(env.mailer.sent) == defaults.CLAIM_CODES_PER_HOUR
    events = [e.event for e in env.store.events(mid)]
    assert events.count("locked") == 1 and "verify-while-locked" in events
