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

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from pprint import pformat
from typing import Any

import pytest

from tests.harness.portal import (
    ARTIFACTS,
    CODE,
    HOSTS,
    PASSWORD,
    PDF,
    World,
    browser,
    fill_enrolment,
    html_message,
    open_invite,
    open_link,
    open_store,
    plain_message,
    portal_world,
)
from zivmilter.mail.notification import NOTIFICATION_HEADER
from zivmilter.portal.accounts import add_recipient_account
from zivmilter.portal.context import LANG_COOKIE
from zivmilter.portal.i18n import texts
from zivmilter.store import MessageRecord

playwright_api = pytest.importorskip("playwright.sync_api")
axe_package = pytest.importorskip("axe_playwright_python")

pytestmark = pytest.mark.integration
_ = browser  # the module fixture from the shared harness

AXE = (Path(axe_package.__file__).parent / "axe.min.js").read_text()
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
NARROW = {"width": 320, "height": 720}  # WCAG 1.4.10: 320 CSS px without scrolling sideways
LANGS = ["en", "nl", "de"]
DUTCH_DOMAIN = "x.example"  # notifications to it are in Dutch; to oldmail.example, in English
GERMAN_DOMAIN = "y.example"  # and to it, in German
DOMAIN = {"en": "oldmail.example", "nl": DUTCH_DOMAIN, "de": GERMAN_DOMAIN}
assert " x.example " in HOSTS
HOSTS_HERE = HOSTS.replace(" x.example ", f" x.example {GERMAN_DOMAIN} ")


# --- the stack and the browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with portal_world(
        lambda sms: {
            # the notification's language by the recipient's domain: each gets checked
            "notification": {"languages": {DUTCH_DOMAIN: "nl", GERMAN_DOMAIN: "de"}},
            # "remember this browser" on the code-sent pages (issue 25): checked there too
            "policy": {"methods": {"remember_device_days": 30}},
            "sms": sms.webhook(),
        },
        hosts=HOSTS_HERE,
    ) as w:
        yield w


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

    def step(
        self,
        click: str,
        shows: str,
        state: str,
        fill: dict[str, str] | None = None,
        invalid: str | None = None,
    ) -> None:
        """One step of a flow: fill in `fill`, click `click`, wait until `shows` is on the page,
        assert that the field `invalid` is marked invalid (an error names it), and check the
        page that came as `state`."""
        for field, value in (fill or {}).items():
            self.page.fill(field, value)
        self.page.click(click)
        self.page.locator(shows).wait_for()
        if invalid is not None:
            assert self.page.get_attribute(invalid, "aria-invalid") == "true", (state, invalid)
        self.check(state)

    def open_notification(self, msg: EmailMessage, state: str) -> int:
        """Send `msg` to its one recipient through Postfix, open the link its notification
        brings, and check the first page as `state`. Returns how many mails had arrived before,
        for what comes later (a code mail, a reply) to be looked for after them."""
        address = str(msg["To"])
        before = len(self.world.sink.received)
        self.world.send(msg, [address])
        link, _ = self.world.notification_link(address, before)
        open_link(self.page, link)
        self.check(state)
        return before

    def wrong_code(self, state: str) -> None:
        """A wrong code sent: the error names the code field; check that page as `state`."""
        wrong = not_the_code(self.page)
        self.step("form.verify button", "#error", state, {"#code": wrong}, invalid="#code")

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
    return html_message(
        to,
        extra,
        "Your lab results are fine.",
        "<p>Your lab results are <b>fine</b>.</p>"
        "<p><img src='cid:scan@hospital' alt='Scan of the left knee' width='8'></p>",
        tag="a11y",
    )


def base(world: World) -> str:
    return f"http://127.0.0.1:{world.port}"


def stored(world: World, message_id: str) -> MessageRecord:
    with open_store(world) as store:
        (found,) = store.find_messages(message_id)
    return found


def not_the_code(page: Any) -> str:
    """A wrong code of the kind the field asks for (six digits, or an access code)."""
    return "000000" if page.get_attribute("#code", "inputmode") else "not-it"


def wrong_code(page: Any) -> None:
    page.fill("#code", not_the_code(page))
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
    a.wrong_code("wrong-code")
    assert page.get_attribute("#code", "aria-describedby") == "error"
    page.fill("#code", CODE)
    page.click("form.verify button")
    page.locator("#subject").wait_for()
    here = page.url
    page.frame_locator("#body").locator("img").wait_for()
    a.check("message")
    a.check_at_own_address(here + "body", "message-frame")
    page.goto(here)

    # empty: the reply field is what the error is about
    a.step("#send-reply", "#error", "reply-empty", invalid="#reply-text")
    a.step("#send-reply", "#notice", "reply-sent", {"#reply-text": "Thank you, doctor."})
    world.mail_for("alice@hospital.example", before, "Thank you, doctor.")
    # The two other outcomes of a reply, as the store records them after the MTA answered:
    # kept for later, and refused.
    with open_store(world) as store:
        (rcpt,) = store.recipients(stored(world, str(msg["Message-ID"])).id)
        reply_id = store.save_reply(rcpt.id, b"From: x\r\n\r\nlater\r\n")
    page.goto(here + "?replied=later")
    page.locator("#notice").wait_for()
    a.check("reply-later")
    with open_store(world) as store:
        store.mark_reply_undeliverable(reply_id, "550 5.7.1 refused")
    page.goto(here + "?replied=refused")
    page.locator("#error").wait_for()
    a.check("reply-refused")

    a.step("#logout", "section.notice-page", "signed-out")
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
    directive = {"zivver-access-right": f"{address} sms +3161234567{LANGS.index(lang)}"}
    a.open_notification(plain_message(address, "SMS-A11Y", directive), "verify")
    calls = len(world.sms.handler.calls)
    page.click("#send")
    page.locator("#notice").wait_for()
    world.sms.wait_for(calls + 1)
    assert page.get_attribute("#code", "autocomplete") == "one-time-code"
    assert page.locator("#remember").count() == 1
    a.check("code-sent")
    a.wrong_code("wrong-code")
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
    msg = plain_message(address, "EMAIL-A11Y")
    before = a.open_notification(msg, "verify")
    a.step("#send", "#notice", "code-sent")
    # the code mail (its Subject is RFC 2047-encoded where the language needs it)
    code_mail = world.mail_for(address, before, f"{NOTIFICATION_HEADER}: code").message()
    assert code_mail["Subject"] == texts(lang)["code_mail_subject"]
    text = code_mail.get_body(("plain",))
    assert text is not None
    (code,) = re.findall(r"\b\d{6}\b", text.get_content())
    a.step("form.verify button", "#text", "message-text", {"#code": code})
    mid = stored(world, str(msg["Message-ID"])).id
    with open_store(world) as store:
        assert store.set_expiry(mid, datetime.now(UTC) - timedelta(minutes=1))
    page.reload()
    page.locator("section.notice-page.error").wait_for()
    a.check("expired")

    # A large attachment's download page (/d/), for the same message: the visitor says who
    # they are, then is asked for an emailed code.
    with open_store(world) as store:
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
    a.step("form.verify button", "#error", "download-bad-address", invalid="#address")
    a.step("form.verify button", "#send", "download-claimed", {"#address": address})
    a.step("#send", "#notice", "download-code-sent")
    a.wrong_code("download-wrong-code")
    a.assert_clean()


@pytest.mark.parametrize("lang", LANGS)
def test_account_sign_in_and_enrolment_with_qr(
    world: World, browser: Any, audits: list[Audit], lang: str
) -> None:
    a = audit(audits, browser, world, lang, "account")
    address = f"erin-{lang}@oldmail.example"
    with open_store(world) as store:
        add_recipient_account(store, address, PASSWORD)
    a.open_notification(plain_message(address, "ACCOUNT-A11Y"), "sign-in")
    a.step(
        "form.verify button",
        "#error",
        "wrong-password",
        {"#password": "not the password"},
        invalid="#password",
    )
    a.step("form.verify button", "figure.qr svg", "enrol", {"#password": PASSWORD})
    a.step("form.verify button", "#error", "enrol-wrong", {"#totp": "000000"}, invalid="#totp")
    a.assert_clean()


# --- the sender (/sent/) -------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGS)
def test_sender_enrols_signs_in_and_withdraws(
    world: World, browser: Any, audits: list[Audit], lang: str
) -> None:
    a = audit(audits, browser, world, lang, "sent")
    page = a.page
    sender = f"bob-{lang}@hospital.example"
    with open_store(world) as store:
        store.add_account(sender, "sender")
    secret = open_invite(world, page, sender)
    a.check("enrol")
    fill_enrolment(page, secret, PASSWORD, PASSWORD + " again")
    page.locator("#error").wait_for()
    assert page.get_attribute("#password2", "aria-invalid") == "true"
    a.check("enrol-error")
    fill_enrolment(page, secret, PASSWORD, PASSWORD)
    page.locator("#who").wait_for()
    a.check("list-empty")

    before = len(world.sink.received)
    rcpt = f"frank-{lang}@oldmail.example"
    msg = plain_message(rcpt, "SENT-A11Y", {"zivver-access-right": f"{rcpt} access-code {CODE}"})
    msg.replace_header("From", sender)
    world.send(msg, [rcpt], sender=sender)
    world.notification_link(rcpt, before)
    page.reload()
    page.locator("article.sent").first.wait_for()
    a.check("list")
    page.locator("article.sent h2 a").first.click()
    page.locator("#subject").wait_for()
    a.check("message")
    here = page.url
    a.step("#set-expiry", "#expires", "expiry")
    a.step("#next", "#error", "expiry-past", {"#expires": "2001-01-01T10:00"}, invalid="#expires")
    a.step("#next", "#question", "expiry-confirm", {"#expires": "2099-01-01T10:00"})
    page.goto(here)
    a.step("#revoke-all", "#question", "revoke-confirm")
    a.step("#confirm", "#notice", "withdrawn")

    a.step("#sign-out", "#sign-in", "sign-in")
    a.step(
        "#sign-in",
        "#error",
        "sign-in-wrong",
        {"#address": sender, "#password": "wrong password here", "#totp": "000000"},
        invalid="#password",
    )
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
