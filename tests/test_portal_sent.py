"""The sender's side of the portal in-process (issue 19), on a real encrypted store: enrolment
through an invitation, sign-in with password and authenticator, lockout, sent items with their
read status, withdrawing and expiry after a confirmation, 404 for anyone else's message, read
receipts, both languages. The browser test (tests/integration/test_portal_browser.py) runs the
same from a message that went through Postfix."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from tests.test_portal_app import Env, code_rcpt, csrf, open_link, shows_message, verified
from zivmilter import crypto, defaults
from zivmilter.store import NewMessage, NewRecipient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PASSWORD = "correct horse battery staple"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, {"notification": {"read_receipts": True}})
    e.store.add_account("alice@hospital.example", "sender")
    e.store.add_account("mallory@hospital.example", "sender")
    yield e
    e.store.close()


def enrol(env: Env, client: Any, address: str) -> bytes:
    """Follow a fresh invitation; returns the authenticator secret (signed in afterwards)."""
    token = env.store.add_invite(address, 3600)
    assert token is not None
    r = client.get(f"/sent/invite/{token}")
    assert r.status_code == 200 and r.headers["referrer-policy"] == "no-referrer"
    page = client.get("/sent/invite/")
    assert page.status_code == 200 and address in page.text
    b32 = re.search(r'id="secret">([A-Z2-7 ]+)<', page.text)
    assert b32 is not None
    text = b32.group(1).replace(" ", "")
    secret = base64.b32decode(text + "=" * (-len(text) % 8))
    r = client.post(
        "/sent/invite/",
        data={
            "csrf": csrf(page.text, "sent/invite/"),
            "password": PASSWORD,
            "password2": PASSWORD,
            "totp": totp(secret, env.clock.t),
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].endswith("/sent/")
    return secret


def totp(secret: bytes, at: float) -> str:
    return TOTP(secret, 6, SHA1(), 30).generate(int(at)).decode()


def sign_in(client: Any, address: str, password: str, code: str) -> Any:
    form = client.get("/sent/")
    return client.post(
        "/sent/sign-in",
        data={
            "csrf": csrf(form.text, "sign-in"),
            "address": address,
            "password": password,
            "totp": code,
        },
    )


def save(env: Env, sender: str, subject: str, recipients: list[NewRecipient]) -> str:
    saved = env.store.save_message(
        NewMessage(sender=sender, subject=subject, content=b"Subject: x\r\n\r\nbody\r\n",
                   recipients=recipients, rfc822_id=f"<{subject}@hospital.example>")
    )  # fmt: skip
    return saved.id


def test_enrol_sign_out_sign_in_and_lockout(env: Env) -> None:
    c = env.client()
    secret = enrol(env, c, "alice@hospital.example")
    assert "alice@hospital.example" in c.get("/sent/").text  # signed in by the enrolment
    page = c.get("/sent/")
    c.post("/sent/sign-out", data={"csrf": csrf(page.text, "sign-out")})
    assert 'id="sign-in"' in c.get("/sent/").text
    # the enrolment's code is spent; the next step's works once
    env.clock.t += 30
    r = sign_in(c, "alice@hospital.example", PASSWORD, totp(secret, env.clock.t))
    assert r.status_code == 200 and 'id="who"' in r.text
    # wrong passwords lock the account; the lock holds for the right one too
    other = env.client()
    for _ in range(defaults.LOCKOUT_AFTER - 1):
        r = sign_in(other, "alice@hospital.example", "wrong password!!", totp(secret, env.clock.t))
        assert r.status_code == 401 and 'id="error"' in r.text
    r = sign_in(other, "alice@hospital.example", "wrong password!!", "000000")
    assert r.status_code == 429
    env.clock.t += 30
    r = sign_in(other, "alice@hospital.example", PASSWORD, totp(secret, env.clock.t))
    assert r.status_code == 429
    # an unknown address and a recipient account get the same answer as a wrong password
    assert sign_in(env.client(), "nobody@hospital.example", PASSWORD, "123456").status_code == 401
    # an invitation works once
    token = env.store.add_invite("alice@hospital.example", 3600)
    assert token is not None
    env.store.redeem_invite(crypto.token_hash(token), "x", b"k" * 20, 1)
    assert env.client().get(f"/sent/invite/{token}").status_code == 404


def _without_tokens(html: str) -> str:
    """A page as a visitor compares it: the form's CSRF token is fresh on every page."""
    return re.sub(r'name="csrf" value="[^"]+"', 'name="csrf" value=""', html)


def test_the_lockout_does_not_tell_whether_a_sender_account_exists(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six wrong sign-ins answer alike for an enrolled sender, an address without an account,
    a recipient's account and a sender account switched off: the same statuses and pages, one
    password check each for the first five (a decoy hash where there is no account), and the
    sixth refused by the lock before any check."""
    from zivmilter.portal import accounts

    checks: list[str] = []
    real = accounts.password_valid

    def counted(stored: str, password: str) -> bool:
        checks.append(password)
        return real(stored, password)

    monkeypatch.setattr(accounts, "password_valid", counted)
    secret = enrol(env, env.client(), "alice@hospital.example")
    env.store.add_account("bob@partner.example", "recipient")
    env.store.set_account_active("mallory@hospital.example", False)
    addresses = [
        "alice@hospital.example", "nobody@hospital.example", "Nobody.Else@Hospital.Example",
        "bob@partner.example", "mallory@hospital.example",
    ]  # fmt: skip
    answers = {}
    for address in addresses:
        c = env.client()
        seen = []
        for n in range(6):
            checks.clear()
            r = sign_in(c, address, f"wrong password {n}!", totp(secret, env.clock.t))
            seen.append((r.status_code, _without_tokens(r.text), len(checks)))
        answers[address] = seen
    first = answers["alice@hospital.example"]
    assert [(status, n) for status, _, n in first] == [(401, 1)] * 4 + [(429, 1), (429, 0)]
    assert 'id="error"' in first[0][1] and 'id="error"' in first[4][1]
    assert first[4][1] == first[5][1] and first[4][1] != first[0][1]
    for address in addresses[1:]:
        assert answers[address] == first, address
    assert env.store.account("nobody@hospital.example") is None
    # the lock holds for the right password and code too, and passes for both alike
    env.clock.t += 30
    assert (
        sign_in(
            env.client(), "alice@hospital.example", PASSWORD, totp(secret, env.clock.t)
        ).status_code
        == 429
    )
    env.clock.t += 60
    assert (
        sign_in(env.client(), "nobody@hospital.example", "wrong again!!", "000000").status_code
        == 401
    )
    r = sign_in(env.client(), "alice@hospital.example", PASSWORD, totp(secret, env.clock.t))
    assert r.status_code == 200 and 'id="who"' in r.text


def test_sent_items_read_status_revoke_expiry_and_nobody_elses(env: Env) -> None:
    c = env.client()
    enrol(env, c, "alice@hospital.example")
    mid = save(env, "alice@hospital.example", "Lab & results", [
        code_rcpt("dave@oldmail.example"), code_rcpt("erin@oldmail.example"),
        NewRecipient("bob@partner.example", 1, "transport", "direct", "A4", level="dane"),
    ])  # fmt: skip
    tokens = {r.address: r for r in env.store.recipients(mid)}
    page = c.get("/sent/")
    assert "Lab &amp; results" in page.text and page.text.count("Not opened yet") == 2
    assert "At sending (direct delivery)" in page.text

    # dave opens a message (twice): the sender's page shows when; one receipt went out
    sent_before = len(env.mailer.sent)
    mid2, toks = env.save([code_rcpt("dave@oldmail.example")])
    verified(env, env.client(), toks["dave@oldmail.example"])
    verified(env, env.client(), toks["dave@oldmail.example"])
    receipts = env.mailer.sent[sent_before:]
    assert len(receipts) == 1 and receipts[0].recipients == ["alice@hospital.example"]
    receipt = env.mailer.last()
    assert receipt["In-Reply-To"] == "<lab-1@hospital.example>"
    assert "dave@oldmail.example" in receipt["Subject"]
    assert "Lab results" not in receipt.as_string() and "body" not in receipt.get_content()
    detail = c.get(f"/sent/m/{mid2}/")
    assert "24 Nov 2026, 09:00 UTC" in detail.text and "Not opened yet" not in detail.text

    # withdraw one recipient, after a confirmation
    confirm = c.get(f"/sent/m/{mid}/revoke", params={"recipient": "dave@oldmail.example"})
    assert 'id="question"' in confirm.text and "dave@oldmail.example" in confirm.text
    r = c.post(
        f"/sent/m/{mid}/revoke",
        data={"csrf": csrf(confirm.text, "revoke"), "recipient": "dave@oldmail.example"},
    )
    assert r.status_code == 200 and "withdrawn for dave@oldmail.example" in r.text
    assert env.store.link_state(tokens["dave@oldmail.example"].id).revoked_at is not None  # type: ignore[union-attr]
    assert env.store.link_state(tokens["erin@oldmail.example"].id).revoked_at is None  # type: ignore[union-attr]
    # a direct recipient offers no withdrawal and says why
    assert "cannot be withdrawn" in r.text

    # the expiry: chosen, confirmed, set
    form = c.get(f"/sent/m/{mid}/expiry")
    token = csrf(form.text, "expiry")
    r = c.post(f"/sent/m/{mid}/expiry", data={"csrf": token, "expires": "2026-11-30T12:00"})
    assert 'id="question"' in r.text and env.store.message(mid).expires_at is None  # type: ignore[union-attr]
    done = {"csrf": token, "expires": "2026-11-30T12:00", "confirm": "1"}
    r = c.post(f"/sent/m/{mid}/expiry", data=done)
    assert r.status_code == 200 and "30 Nov 2026, 12:00 UTC" in r.text
    past = c.post(f"/sent/m/{mid}/expiry", data={**done, "expires": "2020-01-01T00:00"})
    assert past.status_code == 400

    # another sender: neither listed nor reachable by URL (404, as for no message at all)
    m = env.client()
    enrol(env, m, "mallory@hospital.example")
    assert "Lab &amp; results" not in m.get("/sent/").text
    for url in (f"/sent/m/{mid}/", f"/sent/m/{mid}/revoke", f"/sent/m/{mid}/expiry"):
        assert m.get(url).status_code == 404
        assert m.get(url.replace(mid, "0" * len(mid))).status_code == 404
    # with a valid token of her own revoke form (of her own message): still 404
    own = save(env, "mallory@hospital.example", "Mine", [code_rcpt("dave@oldmail.example")])
    token = csrf(m.get(f"/sent/m/{own}/revoke").text, "revoke")
    forged = m.post(f"/sent/m/{mid}/revoke", data={"csrf": token})
    assert forged.status_code == 404
    assert m.post(f"/sent/m/{mid}/expiry", data={"csrf": token}).status_code == 404
    assert env.store.message(mid).revoked_at is None  # type: ignore[union-attr]

    # the whole message
    confirm = c.get(f"/sent/m/{mid}/revoke")
    r = c.post(f"/sent/m/{mid}/revoke", data={"csrf": csrf(confirm.text, "revoke")})
    assert "The message is withdrawn" in r.text
    assert env.store.message(mid).revoked_at is not None  # type: ignore[union-attr]


def test_disabling_the_account_ends_its_session(env: Env) -> None:
    c = env.client()
    enrol(env, c, "alice@hospital.example")
    assert 'id="who"' in c.get("/sent/").text
    kept = env.client()  # a copy of the cookie that asks nothing while the account is off
    kept.cookies.update(c.cookies)
    env.store.set_account_active("alice@hospital.example", False)
    assert 'id="sign-in"' in c.get("/sent/").text
    # switched on again, the account does not bring back the sessions switching it off ended
    env.store.set_account_active("alice@hospital.example", True)
    assert 'id="sign-in"' in kept.get("/sent/").text


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_every_sender_page_renders_in_both_languages(env: Env, lang: str) -> None:
    c = env.client()
    token = env.store.add_invite("alice@hospital.example", 3600)
    c.get(f"/sent/invite/{token}")
    assert c.get("/sent/invite/", params={"lang": lang}).status_code == 200
    enrol(env, c, "alice@hospital.example")
    mid = save(env, "alice@hospital.example", "Scan", [code_rcpt("dave@oldmail.example")])
    for url in ("/sent/", f"/sent/m/{mid}/", f"/sent/m/{mid}/revoke", f"/sent/m/{mid}/expiry"):
        r = c.get(url, params={"lang": lang})
        assert r.status_code == 200 and f'lang="{lang}"' in r.text, url


@pytest.fixture
def amsterdam(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, {
        "organization": {"name": "Hospital", "domains": ["hospital.example"],
                         "timezone": "Europe/Amsterdam"},
    })  # fmt: skip
    e.store.add_account("alice@hospital.example", "sender")
    yield e
    e.store.close()


def _field(page: str) -> str:
    found = re.search(r'<input id="expires" name="expires" type="datetime-local" value="([^"]*)"',
                      page)  # fmt: skip
    assert found is not None, page
    return found.group(1)


def test_the_expiry_is_typed_and_shown_in_the_organizations_zone(amsterdam: Env) -> None:
    env = amsterdam  # the portal's clock: 24 Nov 2026, 09:00 UTC = 10:00 CET
    c = env.client()
    enrol(env, c, "alice@hospital.example")
    mid = save(env, "alice@hospital.example", "Scan", [code_rcpt("dave@oldmail.example")])
    form = c.get(f"/sent/m/{mid}/expiry")
    assert "Expires at (time in Europe/Amsterdam)" in form.text
    assert _field(form.text) == "2026-11-24T10:00"  # now, on the organization's clock
    env.store.set_expiry(mid, datetime(2026, 11, 30, 11, 0, tzinfo=UTC), "test")
    form = c.get(f"/sent/m/{mid}/expiry")
    assert _field(form.text) == "2026-11-30T12:00"  # the current expiry, as a Dutch clock reads
    token = csrf(form.text, "expiry")

    def chosen(typed: str) -> Any:
        return c.post(f"/sent/m/{mid}/expiry", data={"csrf": token, "expires": typed})

    # 09:30 in Amsterdam is past (08:30 UTC), though 09:30 UTC would still be ahead
    assert chosen("2026-11-24T09:30").status_code == 400
    # winter and summer time: the moment the sender confirms is the one typed, with its zone
    cases = [
        ("2026-12-01T12:00", "1 Dec 2026, 12:00 CET", datetime(2026, 12, 1, 11, 0)),
        ("2027-07-01T12:00", "1 Jul 2027, 12:00 CEST", datetime(2027, 7, 1, 10, 0)),
        # clocks back (31 Oct 2027): 02:30 comes twice; the first, still summer time
        ("2027-10-31T02:30", "31 Oct 2027, 02:30 CEST", datetime(2027, 10, 31, 0, 30)),
        # clocks forward (28 Mar 2027): no 02:30; read with winter time's offset, 03:30 CEST
        ("2027-03-28T02:30", "28 Mar 2027, 03:30 CEST", datetime(2027, 3, 28, 1, 30)),
    ]
    for typed, shown, utc in cases:
        r = chosen(typed)
        assert r.status_code == 200 and 'id="question"' in r.text, typed
        assert f"expire at {shown}?" in r.text, typed
        done = c.post(f"/sent/m/{mid}/expiry",
                      data={"csrf": token, "expires": typed, "confirm": "1"})  # fmt: skip
        assert done.status_code == 200 and shown in done.text, typed
        record = env.store.message(mid)
        assert record is not None and record.expires_at == utc.replace(tzinfo=UTC), typed
    # and the form offers the expiry just set, as the organization's clock reads it
    assert _field(c.get(f"/sent/m/{mid}/expiry").text) == "2027-03-28T03:30"


def test_signing_out_or_a_new_enrolment_ends_copied_sessions(env: Env) -> None:
    """A copy of a sender's session cookie (another tab, a device, a thief) stops working when
    its session ends: at sign-out, and when a new invitation sets a new password and
    authenticator (the way back after a lost or stolen credential), as on the recipient side."""
    mid = save(env, "alice@hospital.example", "Lab", [code_rcpt("dave@oldmail.example")])
    for end in ("sign-out", "new enrolment"):
        with env.client() as c, env.client() as thief:
            if end == "sign-out":
                env.clock.t += 30
                secret = enrol(env, env.client(), "alice@hospital.example")
                env.clock.t += 30
                sign_in(c, "alice@hospital.example", PASSWORD, totp(secret, env.clock.t))
            else:
                env.clock.t += 30
                enrol(env, c, "alice@hospital.example")
            thief.cookies.update(c.cookies)
            assert 'id="who"' in thief.get("/sent/").text
            assert thief.get(f"/sent/m/{mid}/").status_code == 200
            if end == "sign-out":
                page = c.get("/sent/")
                c.post("/sent/sign-out", data={"csrf": csrf(page.text, "sign-out")})
            else:
                env.clock.t += 30
                enrol(env, env.client(), "alice@hospital.example")
            assert 'id="sign-in"' in thief.get("/sent/").text
            r = thief.get(f"/sent/m/{mid}/revoke", follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].endswith("/sent/")
    assert env.store.message(mid).revoked_at is None  # type: ignore[union-attr]


def test_withdrawing_for_a_malformed_recipient_is_refused_not_a_fault(env: Env) -> None:
    """A forged or damaged form (the recipient field is not an address) gets the page that says
    nothing was withdrawn, not a server error; nothing is withdrawn."""
    c = env.client()
    enrol(env, c, "alice@hospital.example")
    mid = save(env, "alice@hospital.example", "Lab", [code_rcpt("dave@oldmail.example")])
    token = csrf(c.get(f"/sent/m/{mid}/revoke").text, "revoke")
    for bad in ("not an address", "dave@oldmail.example\r\nX-Injected: 1"):
        r = c.post(f"/sent/m/{mid}/revoke", data={"csrf": token, "recipient": bad})
        assert r.status_code == 409 and 'id="error"' in r.text
    assert env.store.message(mid).revoked_at is None  # type: ignore[union-attr]
    (dave,) = env.store.recipients(mid)
    assert env.store.link_state(dave.id).revoked_at is None  # type: ignore[union-attr]


def test_an_expired_message_cannot_be_given_a_new_expiry(env: Env) -> None:
    """Expired is final, as withdrawn is: the sender's page offers no new expiry for it, and a
    form posted anyway (kept open from before, or forged) does not bring it back for the
    recipient in the minutes before the purge takes its key."""
    c = env.client()
    enrol(env, c, "alice@hospital.example")
    expires = datetime.fromtimestamp(env.clock.t + 600, UTC)
    mid, tokens = env.save([code_rcpt("dave@oldmail.example")], expires_at=expires)
    token = csrf(c.get(f"/sent/m/{mid}/expiry").text, "expiry")
    env.clock.t += 601  # expired; the sender's session (an hour) still on
    assert c.get(f"/sent/m/{mid}/expiry", follow_redirects=False).status_code == 303
    later = {"csrf": token, "expires": "2026-12-31T12:00", "confirm": "1"}
    r = c.post(f"/sent/m/{mid}/expiry", data=later)
    assert r.status_code == 409 and 'id="error"' in r.text
    assert env.store.message(mid).expires_at == expires  # type: ignore[union-attr]
    reader = env.client()
    here = open_link(reader, tokens["dave@oldmail.example"])
    page = reader.get(here)
    assert page.status_code == 410 and not shows_message(page)


@pytest.mark.parametrize("path", ["body", "attachment/3", "part/2"])
def test_reading_the_frame_or_a_part_without_the_page_is_an_open(env: Env, path: str) -> None:
    """SPEC 8: every open is recorded, and the sender's read status and read receipt rest on
    it. A verified recipient who fetches the message's frame, an attachment or an inline image
    straight away (not the page the verification leads to) has read it all the same."""
    c = env.client()
    enrol(env, c, "alice@hospital.example")
    mid, tokens = env.save([code_rcpt("dave@oldmail.example")])
    reader = env.client()
    here = open_link(reader, tokens["dave@oldmail.example"])
    page = reader.get(here)
    r = reader.post(
        here + "verify",
        data={"csrf": csrf(page.text, "verify"), "code": "tulip-secret-42"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    sent_before = len(env.mailer.sent)
    got = reader.get(here + path)
    assert got.status_code == 200 and len(got.content) > 0
    if path == "body":
        assert "BODY-MARKER" in got.text
    assert "Not opened yet" not in c.get(f"/sent/m/{mid}/").text
    receipts = env.mailer.sent[sent_before:]
    assert [m.recipients for m in receipts] == [["alice@hospital.example"]]
    # the page shown after it is one more open; its frame and images add none
    opened = [e for e in env.store.events(mid) if e.event == "opened"]
    assert len(opened) == 1
    assert shows_message(reader.get(here))
    reader.get(here + "body")
    reader.get(here + "part/2")
    assert len([e for e in env.store.events(mid) if e.event == "opened"]) == 2
    assert len(env.mailer.sent) == sent_before + 1


def test_a_direct_delivery_cannot_be_withdrawn_by_a_form_posted_anyway(env: Env) -> None:
    """The page offers no withdrawal for a message delivered directly (SPEC 8: it cannot be
    revoked); a form posted anyway (kept from another message, or forged) withdraws nothing
    either: the sent items keep its subject and the audit log records no revocation."""
    c = env.client()
    enrol(env, c, "alice@hospital.example")
    direct = NewRecipient("bob@partner.example", 1, "transport", "direct", "A4", level="dane")
    mid = save(env, "alice@hospital.example", "Scan results", [direct])
    other = save(env, "alice@hospital.example", "Other", [code_rcpt("dave@oldmail.example")])
    assert c.get(f"/sent/m/{mid}/revoke", follow_redirects=False).status_code == 303
    token = csrf(c.get(f"/sent/m/{other}/revoke").text, "revoke")
    for recipient in ("", "bob@partner.example"):
        r = c.post(f"/sent/m/{mid}/revoke", data={"csrf": token, "recipient": recipient})
        assert r.status_code == 409 and 'id="error"' in r.text
    assert "Scan results" in c.get(f"/sent/m/{mid}/").text
    assert env.store.message(mid).revoked_at is None  # type: ignore[union-attr]
    assert "revoked" not in [e.event for e in env.store.events(mid)]
