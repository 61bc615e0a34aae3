"""A trusted device (issue 25 part 3), in-process on a real store: after an SMS or emailed code
the recipient may tick "remember this browser"; later links for the same address then open in
that browser without a code, until the configured days pass or `contacts forget` ends it. Never
for access codes or accounts, never across addresses. The browser tests (Chromium) are in
tests/integration/test_portal_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_portal_app import (
    PHONE,
    Env,
    code_rcpt,
    csrf,
    open_link,
    rcpt,
    shows_message,
    sms_codes,
)
from zivmilter.portal import accounts

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DAYS = 30
ON = {"policy": {"methods": {"remember_device_days": DAYS}}}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, ON)
    yield e
    e.store.close()


def emailed_code(env: Env) -> str:
    body = env.mailer.last().get_body(("plain",))
    assert body is not None
    (code,) = re.findall(r"\b\d{6}\b", body.get_content())
    return str(code)


def answer(env: Env, client: Any, token: str, *, remember: bool, sms: bool = False) -> Any:
    """Open a link, have a code sent and answer it, ticking "remember this browser" or not."""
    here = open_link(client, token)
    sent = client.post(here + "send", data={"csrf": csrf(client.get(here).text, "send")})
    code = sms_codes(env.sms_file)[-1][1] if sms else emailed_code(env)
    data = {"csrf": csrf(sent.text, "verify"), "code": code}
    if remember:
        data["remember"] = "1"
    return client.post(here + "verify", data=data, follow_redirects=False)


def asks_for_code(client: Any, token: str) -> bool:
    page = client.get(open_link(client, token))
    assert page.status_code == 200
    return not shows_message(page) and 'action="' in page.text and "/send" in page.text


def test_a_remembered_browser_opens_later_links_of_its_address_without_a_code(env: Env) -> None:
    _, first = env.save([rcpt("s@example.org", "email")])
    with env.client() as client:
        page = client.get(open_link(client, first["s@example.org"]))
        assert 'name="remember"' not in page.text  # offered with the code field only
        sent = client.post(str(page.url) + "send", data={"csrf": csrf(page.text, "send")}).text
        assert 'type="checkbox" id="remember" name="remember"' in sent
        assert f"Remember this browser for {DAYS} days" in sent
        assert 'aria-describedby="remember-help"' in sent and 'id="remember-help"' in sent
        r = answer(env, client, first["s@example.org"], remember=True)
        assert r.status_code == 303
        (device,) = [c for c in r.headers.get_list("set-cookie") if c.startswith("zv_d")]
        assert "HttpOnly" in device and "SameSite=strict" in device
        assert f"Max-Age={DAYS * 24 * 3600}" in device and "Path=/" in device
        assert "s@example.org" not in device  # neither in its name nor in its value
        assert env.store.devices() == {"s@example.org": 1}
        mid, later = env.save([rcpt("s@example.org", "email")])
        sent_before = len(env.mailer.sent)
        page = client.get(open_link(client, later["s@example.org"]))
        assert page.status_code == 200 and shows_message(page)
        assert len(env.mailer.sent) == sent_before  # no code was sent
    events = [(e.event, e.recipient) for e in env.store.events(mid)]
    assert ("device-used", "s@example.org") in events and ("opened", "s@example.org") in events


def test_not_ticked_or_switched_off_remembers_nothing(tmp_path: Path) -> None:
    for overrides, remember in ((ON, False), ({}, True)):
        env = Env(tmp_path / str(bool(overrides)), overrides)
        _, tokens = env.save([rcpt("s@example.org", "email")])
        with env.client() as client:
            here = open_link(client, tokens["s@example.org"])
            sent = client.post(here + "send", data={"csrf": csrf(client.get(here).text, "send")})
            assert ('name="remember"' in sent.text) is bool(overrides)
            data = {"csrf": csrf(sent.text, "verify"), "code": emailed_code(env), "remember": "1"}
            if not remember:
                del data["remember"]
            r = client.post(here + "verify", data=data, follow_redirects=False)
            assert r.status_code == 303
            assert not [c for c in r.headers.get_list("set-cookie") if c.startswith("zv_d")]
            assert env.store.devices() == {}
            _, later = env.save([rcpt("s@example.org", "email")])
            assert asks_for_code(client, later["s@example.org"])
        env.store.close()


def test_sms_too_and_never_across_addresses(env: Env) -> None:
    _, tokens = env.save(
        [rcpt("carol@example.com", "sms", phone=PHONE), rcpt("s@example.org", "email")]
    )
    with env.client() as client:
        assert answer(env, client, tokens["carol@example.com"], remember=True, sms=True).is_redirect
        assert env.store.devices() == {"carol@example.com": 1}
        # Another address on the same browser is asked for its own code ...
        assert asks_for_code(client, tokens["s@example.org"])
        # ... even with carol's device cookie presented under its name.
        carol = next(v for k, v in client.cookies.items() if k.startswith("zv_d"))
        assert answer(env, client, tokens["s@example.org"], remember=True).is_redirect
        s_name = next(
            k for k in client.cookies if k.startswith("zv_d") and client.cookies[k] != carol
        )
        client.cookies.set(s_name, carol, path="/")
        _, later = env.save([rcpt("s@example.org", "email")])
        assert asks_for_code(client, later["s@example.org"])


def test_expiry_and_contacts_forget_end_a_remembered_browser(env: Env) -> None:
    _, tokens = env.save([rcpt("s@example.org", "email")])
    with env.client() as client:
        answer(env, client, tokens["s@example.org"], remember=True)
        env.clock.t += DAYS * 24 * 3600 - 60
        _, soon = env.save([rcpt("s@example.org", "email")])
        assert not asks_for_code(client, soon["s@example.org"])
        env.clock.t += 60  # the cookie and the store's row both end now
        _, late = env.save([rcpt("s@example.org", "email")])
        assert asks_for_code(client, late["s@example.org"])
        answer(env, client, late["s@example.org"], remember=True)  # remembered again
        assert env.store.forget_devices("s@example.org") == 1
        _, after = env.save([rcpt("s@example.org", "email")])
        assert asks_for_code(client, after["s@example.org"])


def test_never_for_access_codes_or_accounts(env: Env) -> None:
    accounts.add_recipient_account(env.store, "s@example.org", "long enough password")
    _, first = env.save([rcpt("s@example.org", "email")])
    with env.client() as client:
        answer(env, client, first["s@example.org"], remember=True)
        assert env.store.devices() == {"s@example.org": 1}
        _, tokens = env.save([code_rcpt("s@example.org")])
        page = client.get(open_link(client, tokens["s@example.org"]))
        assert not shows_message(page) and 'name="remember"' not in page.text
        r = client.post(
            str(page.url) + "verify",
            data={"csrf": csrf(page.text, "verify"), "code": "tulip-secret-42", "remember": "1"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert not [c for c in r.headers.get_list("set-cookie") if c.startswith("zv_d")]
        _, tokens = env.save([rcpt("s@example.org", "account")])
        page = client.get(open_link(client, tokens["s@example.org"]))
        assert not shows_message(page) and 'name="password"' in page.text
    assert env.store.devices() == {"s@example.org": 1}  # the one from the emailed code only


def test_an_https_site_sends_the_device_cookie_secure_only(tmp_path: Path) -> None:
    env = Env(
        tmp_path,
        {**ON, "portal": {"base_url": "https://secure.hospital.example/portal/"}},
    )
    _, tokens = env.save([rcpt("s@example.org", "email")])
    with env.client() as client:  # its base URL has /portal, the page's links too
        here = open_link(client, tokens["s@example.org"]).removeprefix("/portal")
        sent = client.post(here + "send", data={"csrf": csrf(client.get(here).text, "send")})
        data = {"csrf": csrf(sent.text, "verify"), "code": emailed_code(env), "remember": "1"}
        r = client.post(here + "verify", data=data, follow_redirects=False)
        (device,) = [c for c in r.headers.get_list("set-cookie") if c.startswith("zv_d")]
        assert "Secure" in device and "Path=/portal/" in device
    env.store.close()


def test_dutch_texts(env: Env) -> None:
    _, tokens = env.save([rcpt("s@example.nl", "email")])
    with env.client() as client:
        here = open_link(client, tokens["s@example.nl"])
        sent = client.post(here + "send", data={"csrf": csrf(client.get(here).text, "send")})
        assert f"Deze browser {DAYS} dagen onthouden" in sent.text
        assert "Links voor s@example.nl openen dan in deze browser zonder code." in sent.text
