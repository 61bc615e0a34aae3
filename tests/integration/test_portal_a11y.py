"""WCAG 2.1 AA of every page a recipient or a sender meets in the portal, in English, Dutch
and German.

The pages come from the real thing, as in test_portal_browser.py: a message goes through a private
Postfix with `zivmilter run` attached, its notification reaches a receiving server, and its link
is opened in Chromium against the real `zivmilter portal` process; codes come by the SMS
provider's webhook and by email. On every page state axe-core (the axe.min.js that
`axe-playwright-python` ships, injected into the page) runs with the tags wcag2a, wcag2aa,
wcag21a and wcag21aa and must find nothing; the viewport is 320 CSS px wide and the page must not
scroll sideways (1.4.10 reflow); its <html lang> is the page's language. Two documents are
judged at their own address, as the notes in TESTBED-NOTES.md ask: the page that moves on from
the token URL at once (its meta refresh removed) and the message's sandboxed frame (no scripts
run there). A keyboard-only test walks the whole access-code flow with Tab and Enter, and asserts
a visible focus outline on every control it reaches. Screenshots: test-artifacts/portal/a11y-*.
"""

from __future__ import annotations

import base64
import re
import smtplib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from tests.harness.postfix import PostfixInstance, free_port
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import attach
from tests.integration.test_portal_browser import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    CODE,
    HOSTS,
    MAIL_IP,
    PDF,
    PortalProcess,
    SmsProvider,
    World,
    _store,
    open_link,
    plain_message,
    png,
)
from zivmilter.mail.notification import NOTIFICATION_HEADER
from zivmilter.portal.accounts import add_recipient_account
from zivmilter.portal.context import LANG_COOKIE
from zivmilter.portal.i18n import texts
from zivmilter.store import MessageRecord

playwright_api = pytest.importorskip("playwright.sync_api")
axe_package = pytest.importorskip("axe_playwright_python")

pytestmark = pytest.mark.integration

AXE = (Path(axe_package.__file__).parent / "axe.min.js").read_text()
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
NARROW = {"width": 320, "height": 720}  # WCAG 1.4.10: 320 CSS px without scrolling sideways
PASSWORD = "correct horse battery staple"
LANGS = ["en", "nl", "de"]
DUTCH_DOMAIN = "x.example"  # notifications to it are in Dutch; to oldmail.example, in English
GERMAN_DOMAIN = "y.example"  # and to it, in German
DOMAIN = {"en": "oldmail.example", "nl": DUTCH_DOMAIN, "de": GERMAN_DOMAIN}
assert " x.example " in HOSTS
HOSTS_HERE = HOSTS.replace(" x.example ", f" x.example {GERMAN_DOMAIN} ")


# --- the stack and the browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    port = free_port()
    with bind_mounted("/etc/hosts", HOSTS_HERE), Sink(MAIL_IP, 25) as sink, SmsProvider() as sms:
        pf = PostfixInstance()
        z = attach(
            pf,
            config={
                "portal": {
                    "base_url": f"http://127.0.0.1:{port}/",
                    "listen": f"127.0.0.1:{port}",
                },
                # the notification's language by the recipient's domain: each gets checked
                "notification": {"languages": {DUTCH_DOMAIN: "nl", GERMAN_DOMAIN: "de"}},
                # "remember this browser" on the code-sent pages (issue 25): checked there too
                "policy": {"methods": {"remember_device_days": 30}},
                "sms": {
                    "backend": "webhook",
                    "webhook": {
                        "url": sms.url,
                        "body": '{"recipient": {{ phone }}, "body": {{ text }}}',
                    },
                },
            },
        )
        with z, pf, PortalProcess(z.config_file, port, z.dir / "portal.log"):
            w = World(pf, z, sink, sms, port)
            with _store(w) as store:
                store.add_account("alice@hospital.example", "sender")
            yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


class Audit:
    """One browser context in one language, and what axe and the reflow check found on each
    page state it was asked to check."""

    def __init__(self, browser: Any, world: World, lang: str, name: str) -> None:
        # bypass_csp: axe.min.js goes in as an inline script, which the portal's CSP forbids.
        self.context = browser.new_context(viewport=NARROW, bypass_csp=True, accept_downloads=True)
        self.context.add_cookies(
            [{"name": LANG_COOKIE, "value": lang, "url": f"http://127.0.0.1:{world.port}/"}]
        )
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.world, self.lang, self.name = world, lang, name
        self.found: dict[str, list[str]] = {}
        self.titles: dict[str, str] = {}

    def check(self, state: str) -> None:
        page = self.page
        page.wait_for_load_state("load")
        problems: list[str] = []
        self.titles[state] = page.title()
        lang = page.evaluate("document.documentElement.lang")
        if lang != self.lang:
            problems.append(f"<html lang={lang!r}>")
        page.add_script_tag(content=AXE)
        violations = page.evaluate(
            """async (tags) => {
                const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
                return r.violations.map(v => `${v.id} (${v.impact}): ${v.help} at ` +
                    v.nodes.map(n => n.target.join(' ')).join(', '));
            }""",
            TAGS,
        )
        problems += violations
        wide, room = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        if wide > room:
            problems.append(f"scrolls sideways at {NARROW['width']} px: {wide} > {room}")
        if problems:
            self.found[state] = problems
        page.screenshot(
            path=str(ARTIFACTS / f"a11y-{self.name}-{self.lang}-{state}.png"), full_page=True
        )

    def check_at_own_address(self, url: str, state: str) -> None:
        """A document axe cannot judge where it is (a page that moves on at once, a frame
        without scripts): served at its own address without its refresh and its CSP."""

        def handle(route: Any) -> None:
            response = route.fetch(max_redirects=0)
            body = re.sub(r'<meta http-equiv="refresh"[^>]*>', "", response.text())
            headers = {
                k: v
                for k, v in response.headers.items()
                if k.lower() not in ("content-security-policy", "x-frame-options")
            }
            route.fulfill(status=response.status, headers=headers, body=body)

        self.page.route(url, handle)
        try:
            self.page.goto(url)
            self.check(state)
        finally:
            self.page.unroute(url, handle)

    def check_document(self, html: str, state: str) -> None:
        """A document that is not a page of the portal (the notification's HTML part)."""
        self.page.goto("about:blank")
        self.page.set_content(html)
        self.check(state)

    def assert_clean(self) -> None:
        assert not self.found, f"{self.name} ({self.lang}):\n" + pformat(self.found, width=100)


@pytest.fixture
def audits(browser: Any, world: World) -> Iterator[list[Audit]]:
    made: list[Audit] = []
    yield made
    for audit in made:
        audit.context.close()


def audit(audits: list[Audit], browser: Any, world: World, lang: str, name: str) -> Audit:
    a = Audit(browser, world, lang, name)
    audits.append(a)
    return a


def accessible_message(to: str, extra: dict[str, str]) -> EmailMessage:
    """An HTML message whose own content is accessible (the sender's part is not the portal's
    to fix), with an inline image and an attachment."""
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = to
    msg["Subject"] = "Lab results"
    msg["Message-ID"] = f"<a11y-{time.monotonic_ns()}@hospital.example>"
    for name, value in extra.items():
        msg[name] = value
    msg.set_content("Your lab results are fine.")
    msg.add_alternative(
        "<p>Your lab results are <b>fine</b>.</p>"
        "<p><img src='cid:scan@hospital' alt='Scan of the left knee' width='8'></p>",
        subtype="html",
    )
    html = msg.get_body(("html",))
    assert html is not None
    html.add_related(png(), maintype="image", subtype="png", cid="<scan@hospital>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="results.pdf")
    return msg


def base(world: World) -> str:
    return f"http://127.0.0.1:{world.port}"


def stored(world: World, message_id: str) -> MessageRecord:
    with _store(world) as store:
        (found,) = store.find_messages(message_id)
    return found


def send_from(world: World, sender: str, msg: EmailMessage, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", world.pf.smtp_port, timeout=60) as s:
        assert s.sendmail(sender, rcpts, msg.as_bytes(policy=SMTP)) == {}


def wrong_code(page: Any) -> None:
    page.fill("#code", "000000" if page.get_attribute("#code", "inputmode") else "not-it")
    page.click("form.verify button")
    page.locator("#error").wait_for()


# --- the recipient -------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_access_code_message_reply_and_the_pages_around_it(
    world: World, browser: Any, audits: list[Audit], lang: str
) -> None:
    a = audit(audits, browser, world, lang, "access")
    page = a.page
    address = f"dave-{lang}@{DOMAIN[lang]}"
    before = len(world.sink.received)
    msg = accessible_message(address, {"zivver-access-right": f"{address} access-code {CODE}"})
    world.send(msg, [address])
    link, _ = world.notification_link(address, before)
    # The notification itself, as a mail program on a phone shows its HTML part.
    note = world.mail_for(address, before, "/m/").message().get_body(("html",))
    assert note is not None
    a.check_document(note.get_content(), "notification")

    a.check_at_own_address(link, "opening")
    open_link(page, link)
    a.check("verify")
    wrong_code(page)
    assert page.get_attribute("#code", "aria-invalid") == "true"
    assert page.get_attribute("#code", "aria-describedby") == "error"
    a.check("wrong-code")
    page.fill("#code", CODE)
    page.click("form.verify button")
    page.locator("#subject").wait_for()
    here = page.url
    page.frame_locator("#body").locator("img").wait_for()
    a.check("message")
    a.check_at_own_address(here + "body", "message-frame")
    page.goto(here)

    page.click("#send-reply")  # empty: the reply field is what the error is about
    page.locator("#error").wait_for()
    assert page.get_attribute("#reply-text", "aria-invalid") == "true"
    a.check("reply-empty")
    page.fill("#reply-text", "Thank you, doctor.")
    page.click("#send-reply")
    page.locator("#notice").wait_for()
    a.check("reply-sent")
    world.mail_for("alice@hospital.example", before, "Thank you, doctor.")
    # The two other outcomes of a reply, as the store records them after the MTA answered:
    # kept for later, and refused.
    with _store(world) as store:
        (rcpt,) = store.recipients(stored(world, str(msg["Message-ID"])).id)
        reply_id = store.save_reply(rcpt.id, b"From: x\r\n\r\nlater\r\n")
    page.goto(here + "?replied=later")
    page.locator("#notice").wait_for()
    a.check("reply-later")
    with _store(world) as store:
        store.mark_reply_undeliverable(reply_id, "550 5.7.1 refused")
    page.goto(here + "?replied=refused")
    page.locator("#error").wait_for()
    a.check("reply-refused")

    page.click("#logout")
    page.locator("section.notice-page").wait_for()
    a.check("signed-out")
    assert world.cli("revoke", str(msg["Message-ID"])).returncode == 0
    page.goto(link)
    page.locator("section.notice-page.error").wait_for()
    a.check("revoked")
    page.goto(base(world) + "/m/" + "x" * 40)
    a.check("unknown-link")
    page.goto(base(world) + "/nothing-here")
    a.check("not-found")
    a.context.clear_cookies()
    a.context.add_cookies([{"name": LANG_COOKIE, "value": lang, "url": base(world) + "/"}])
    page.goto(here)
    a.check("no-pass")
    a.assert_clean()


@pytest.mark.parametrize("lang", LANGS)
def test_sms_code_sent_wrong_and_locked(
    world: World, browser: Any, audits: list[Audit], lang: str
) -> None:
    a = audit(audits, browser, world, lang, "sms")
    page = a.page
    address = f"carol-{lang}@oldmail.example"
    before = len(world.sink.received)
    directive = {"zivver-access-right": f"{address} sms +3161234567{LANGS.index(lang)}"}
    world.send(plain_message(address, "SMS-A11Y", directive), [address])
    link, _ = world.notification_link(address, before)
    open_link(page, link)
    a.check("verify")
    calls = len(world.sms.handler.calls)
    page.click("#send")
    page.locator("#notice").wait_for()
    world.sms.wait_for(calls + 1)
    assert page.get_attribute("#code", "autocomplete") == "one-time-code"
    assert page.locator("#remember").count() == 1
    a.check("code-sent")
    wrong_code(page)
    assert page.get_attribute("#code", "aria-invalid") == "true"
    a.check("wrong-code")
    for _ in range(3):
        wrong_code(page)
    page.fill("#code", "000000")  # the fifth (defaults.LOCKOUT_AFTER) locks the link
    page.click("form.verify button")
    page.locator("#locked").wait_for()
    text = page.inner_text("#locked")
    assert "/" not in text and "(s)" not in text, text  # "1 minute", "1 minuut"
    a.check("locked")
    a.assert_clean()
    titles = [a.titles[s] for s in ("verify", "code-sent", "wrong-code", "locked")]
    assert len(set(titles)) == 4, titles  # a screen reader tells the states apart by title


@pytest.mark.parametrize("lang", LANGS)
def test_email_code_message_and_expired(
    world: World, browser: Any, audits: list[Audit], lang: str
) -> None:
    a = audit(audits, browser, world, lang, "email")
    page = a.page
    address = f"s-{lang}@oldmail.example"
    before = len(world.sink.received)
    msg = plain_message(address, "EMAIL-A11Y")
    world.send(msg, [address])
    link, _ = world.notification_link(address, before)
    open_link(page, link)
    a.check("verify")
    page.click("#send")
    page.locator("#notice").wait_for()
    a.check("code-sent")
    # the code mail (its Subject is RFC 2047-encoded where the language needs it)
    code_mail = world.mail_for(address, before, f"{NOTIFICATION_HEADER}: code").message()
    assert code_mail["Subject"] == texts(lang)["code_mail_subject"]
    text = code_mail.get_body(("plain",))
    assert text is not None
    (code,) = re.findall(r"\b\d{6}\b", text.get_content())
    page.fill("#code", code)
    page.click("form.verify button")
    page.locator("#text").wait_for()
    a.check("message-text")
    mid = stored(world, str(msg["Message-ID"])).id
    with _store(world) as store:
        assert store.set_expiry(mid, datetime.now(UTC) - timedelta(minutes=1))
    page.reload()
    page.locator("section.notice-page.error").wait_for()
    a.check("expired")

    # A large attachment's download page (/d/), for the same message: the visitor says who
    # they are, then is asked for an emailed code.
    with _store(world) as store:
        kept = store.save_attachment(mid, "scan.pdf", "application/pdf", PDF)
    download = f"{base(world)}/d/{kept.token}"
    a.check_at_own_address(download, "download-opening")
    page.goto(download)
    page.wait_for_url(re.compile(r"/a/[^/]+/$"))
    page.locator("#address").wait_for()
    a.check("download-address")
    page.fill("#address", "not an address")
    # past the browser's own check of type=email, to the portal's answer
    page.eval_on_selector("form.verify", "f => { f.noValidate = true; }")
    page.click("form.verify button")
    page.locator("#error").wait_for()
    assert page.get_attribute("#address", "aria-invalid") == "true"
    a.check("download-bad-address")
    page.fill("#address", address)
    page.click("form.verify button")
    page.locator("#send").wait_for()
    a.check("download-claimed")
    page.click("#send")
    page.locator("#notice").wait_for()
    a.check("download-code-sent")
    wrong_code(page)
    assert page.get_attribute("#code", "aria-invalid") == "true"
    a.check("download-wrong-code")
    a.assert_clean()


@pytest.mark.parametrize("lang", LANGS)
def test_account_sign_in_and_enrolment_with_qr(
    world: World, browser: Any, audits: list[Audit], lang: str
) -> None:
    a = audit(audits, browser, world, lang, "account")
    page = a.page
    address = f"erin-{lang}@oldmail.example"
    with _store(world) as store:
        add_recipient_account(store, address, PASSWORD)
    before = len(world.sink.received)
    world.send(plain_message(address, "ACCOUNT-A11Y"), [address])
    link, _ = world.notification_link(address, before)
    open_link(page, link)
    a.check("sign-in")
    page.fill("#password", "not the password")
    page.click("form.verify button")
    page.locator("#error").wait_for()
    assert page.get_attribute("#password", "aria-invalid") == "true"
    a.check("wrong-password")
    page.fill("#password", PASSWORD)
    page.click("form.verify button")
    page.locator("figure.qr svg").wait_for()
    a.check("enrol")
    page.fill("#totp", "000000")
    page.click("form.verify button")
    page.locator("#error").wait_for()
    assert page.get_attribute("#totp", "aria-invalid") == "true"
    a.check("enrol-wrong")
    a.assert_clean()


# --- the sender (/sent/) -------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_sender_enrols_signs_in_and_withdraws(
    world: World, browser: Any, audits: list[Audit], lang: str
) -> None:
    a = audit(audits, browser, world, lang, "sent")
    page = a.page
    sender = f"bob-{lang}@hospital.example"
    with _store(world) as store:
        store.add_account(sender, "sender")
    invite = world.cli("account", "invite", sender)
    assert invite.returncode == 0, invite.stderr
    (url,) = re.findall(r"http://\S+/sent/invite/\S+", invite.stdout)
    page.goto(url)
    page.wait_for_url(re.compile(r"/sent/invite/$"))
    a.check("enrol")
    b32 = page.inner_text("#secret").replace(" ", "")
    secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))

    def totp(at: float) -> str:
        return TOTP(secret, 6, SHA1(), 30).generate(at).decode()

    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD + " again")
    page.fill("#totp", totp(time.time()))
    page.click("#enrol")
    page.locator("#error").wait_for()
    assert page.get_attribute("#password2", "aria-invalid") == "true"
    a.check("enrol-error")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.fill("#totp", totp(time.time()))
    page.click("#enrol")
    page.locator("#who").wait_for()
    a.check("list-empty")

    before = len(world.sink.received)
    rcpt = f"frank-{lang}@oldmail.example"
    msg = plain_message(rcpt, "SENT-A11Y", {"zivver-access-right": f"{rcpt} access-code {CODE}"})
    msg.replace_header("From", sender)
    send_from(world, sender, msg, [rcpt])
    world.notification_link(rcpt, before)
    page.reload()
    page.locator("article.sent").first.wait_for()
    a.check("list")
    page.locator("article.sent h2 a").first.click()
    page.locator("#subject").wait_for()
    a.check("message")
    here = page.url
    page.click("#set-expiry")
    page.locator("#expires").wait_for()
    a.check("expiry")
    page.fill("#expires", "2001-01-01T10:00")
    page.click("#next")
    page.locator("#error").wait_for()
    assert page.get_attribute("#expires", "aria-invalid") == "true"
    a.check("expiry-past")
    page.fill("#expires", "2099-01-01T10:00")
    page.click("#next")
    page.locator("#question").wait_for()
    a.check("expiry-confirm")
    page.goto(here)
    page.click("#revoke-all")
    page.locator("#question").wait_for()
    a.check("revoke-confirm")
    page.click("#confirm")
    page.locator("#notice").wait_for()
    a.check("withdrawn")

    page.click("#sign-out")
    page.locator("#sign-in").wait_for()
    a.check("sign-in")
    page.fill("#address", sender)
    page.fill("#password", "wrong password here")
    page.fill("#totp", "000000")
    page.click("#sign-in")
    page.locator("#error").wait_for()
    assert page.get_attribute("#password", "aria-invalid") == "true"
    a.check("sign-in-wrong")
    page.goto(f"{base(world)}/sent/?refused=3")  # the page a locked sign-in redirects to
    page.locator("#error").wait_for()
    text = page.inner_text("#error")
    assert "/" not in text and "(s)" not in text, text
    a.check("sign-in-locked")
    assert a.titles["sign-in-wrong"] != a.titles["sign-in-locked"] != a.titles["sign-in"]
    a.assert_clean()


# --- the keyboard alone --------------------------------------------------------------------


def focused(page: Any) -> dict[str, Any]:
    return page.evaluate(
        """() => { const e = document.activeElement; const s = getComputedStyle(e);
            return {tag: e.tagName, id: e.id, text: (e.innerText || e.value || '').slice(0, 40),
                    style: s.outlineStyle, width: parseFloat(s.outlineWidth) || 0}; }"""
    )


def tab_to(page: Any, until: str, seen: list[dict[str, Any]], limit: int = 40) -> None:
    """Tab until the element `until` (a selector) has the focus; every control passed on the
    way must show where the focus is."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focused(page)
        seen.append(now)
        if now["tag"] != "IFRAME":  # inside the frame the focus is the frame document's
            assert now["style"] not in ("none", "") and now["width"] >= 2, now
        if page.evaluate("(s) => document.activeElement.matches(s)", until):
            return
    raise AssertionError(f"{until} not reached by Tab: {[(s['tag'], s['id']) for s in seen]}")


def test_keyboard_only_access_code_flow(world: World, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        address = "kim@oldmail.example"
        before = len(world.sink.received)
        msg = accessible_message(address, {"zivver-access-right": f"{address} access-code {CODE}"})
        world.send(msg, [address])
        link, _ = world.notification_link(address, before)
        open_link(page, link)  # as from the mail client: the only step that is not a key
        seen: list[dict[str, Any]] = []
        page.locator("#code:focus").wait_for()  # the field has the focus at once
        page.keyboard.type("not-the-code")
        page.keyboard.press("Enter")
        page.locator("#error").wait_for()
        page.locator("#code:focus").wait_for()
        page.keyboard.type(CODE)
        tab_to(page, "form.verify button", seen)
        page.keyboard.press("Enter")
        page.locator("#subject").wait_for()

        tab_to(page, ".attachments a", seen)
        with page.expect_download() as download:
            page.keyboard.press("Enter")
        saved = tmp_path / "results.pdf"
        download.value.save_as(saved)
        assert saved.read_bytes() == PDF
        tab_to(page, "#reply-text", seen)
        page.keyboard.type("KEYBOARD-REPLY by keyboard alone")
        tab_to(page, "#send-reply", seen)
        page.keyboard.press("Enter")
        page.locator("#notice").wait_for()
        world.mail_for("alice@hospital.example", before, "KEYBOARD-REPLY")
        tab_to(page, "#logout", seen)
        page.keyboard.press("Enter")
        page.locator("section.notice-page").wait_for()
        page.screenshot(path=str(ARTIFACTS / "a11y-keyboard-signed-out.png"), full_page=True)
        assert {s["tag"] for s in seen} >= {"A", "BUTTON", "TEXTAREA", "INPUT"}
    finally:
        context.close()
