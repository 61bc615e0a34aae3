"""The recipient's language (issue 25): what the portal speaks to a visitor (their switch, the
contact book, their domain, their browser), and the choice they made there remembered for the
next notification to them. In-process, on a real store; the pages in Chromium are in
tests/integration/test_portal_a11y.py."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Collecting, make_config
from tests.test_portal_app import CODE, Env, code_rcpt, csrf, open_link, shows_message
from zivmilter.core.facts import Contact, Facts, facts_from_mapping
from zivmilter.gateway import Gateway, Transaction
from zivmilter.portal.context import LANG_COOKIE, browser_language

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

GERMAN = "Bestätigen Sie, dass diese Nachricht für Sie bestimmt ist"
DUTCH = "Bevestig dat dit bericht voor u is"
ENGLISH = "Confirm that this message is for you"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.store.close()


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("de-AT,de;q=0.9,en;q=0.8", "de"),
        ("fr-FR, nl;q=0.5, en;q=0.7", "en"),
        ("fr, NL-be;q=0.2", "nl"),
        ("de;q=0, nl;q=0.1", "nl"),
        ("fr, es", None),
        ("", None),
        ("de;q=zero, en", "en"),
    ],
)
def test_the_browsers_language_by_its_weights(header: str, language: str | None) -> None:
    assert browser_language(header) == language


def test_a_page_speaks_the_browsers_language_where_nothing_else_is_known(env: Env) -> None:
    _, tokens = env.save([code_rcpt("dave@oldmail.example"), code_rcpt("nina@example.nl")])
    with env.client() as client:
        client.headers["accept-language"] = "de-DE,de;q=0.9,en;q=0.5"
        page = client.get(open_link(client, tokens["dave@oldmail.example"]))
        assert '<html lang="de">' in page.text and GERMAN in page.text
        # notification.languages knows the domain: that is the language of its notification
        page = client.get(open_link(client, tokens["nina@example.nl"]))
        assert '<html lang="nl">' in page.text and DUTCH in page.text
    with env.client() as client:
        page = client.get(open_link(client, tokens["dave@oldmail.example"]))
        assert '<html lang="en">' in page.text and ENGLISH in page.text  # the default


def test_the_language_chosen_on_the_way_is_remembered_for_the_address(env: Env) -> None:
    _, tokens = env.save([code_rcpt("dave@oldmail.example")])
    with env.client() as client:
        here = open_link(client, tokens["dave@oldmail.example"])
        page = client.get(here + "?lang=de")
        assert GERMAN in page.text and f"{LANG_COOKIE}=de" in page.headers["set-cookie"]
        assert env.store.contact("dave@oldmail.example") is None  # not before they verified
        data = {"csrf": csrf(page.text, "verify"), "code": CODE}
        shown = client.post(here + "verify", data=data)
        assert shows_message(shown) and '<html lang="de">' in shown.text
    assert env.store.contact("dave@oldmail.example") == Contact(access_code=True, language="de")
    # a new browser, without the cookie: the contact book's language, over the browser's
    _, later = env.save([code_rcpt("dave@oldmail.example")])
    with env.client() as other:
        other.headers["accept-language"] = "en"
        page = other.get(open_link(other, later["dave@oldmail.example"]))
        assert '<html lang="de">' in page.text and GERMAN in page.text


def test_a_switch_on_the_message_page_changes_the_remembered_language(env: Env) -> None:
    _, tokens = env.save([code_rcpt("dave@oldmail.example")])
    with env.client() as client:
        here = open_link(client, tokens["dave@oldmail.example"])
        page = client.get(here)
        client.post(here + "verify", data={"csrf": csrf(page.text, "verify"), "code": CODE})
        assert env.store.contact("dave@oldmail.example") == Contact(access_code=True)
        shown = client.get(here + "?lang=nl")
        assert shows_message(shown) and '<html lang="nl">' in shown.text
        assert env.store.contact("dave@oldmail.example") == Contact(access_code=True, language="nl")
        # the cookie alone, on a later view, writes nothing again
        client.get(here)
        assert env.store.contact("dave@oldmail.example") == Contact(access_code=True, language="nl")


class _StoreContacts:
    """The milter's live facts read the contact book from the store (mta/livefacts.py)."""

    def __init__(self, facts: Facts, env: Env) -> None:
        self.facts, self.env = facts, env

    def __getattr__(self, name: str) -> Any:
        return getattr(self.facts, name)

    def contact(self, address: str) -> Contact | None:
        return self.env.store.contact(address)


def test_the_next_notification_is_in_the_language_the_recipient_chose(env: Env) -> None:
    env.store.remember_language("dave@oldmail.example", "de")
    env.store.remember_language("nina@example.nl", "en")  # their choice beats their domain's
    cfg = make_config(
        {
            "submission": {"any_address_of_own_domains": True},
            "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
            "notification": {"languages": {"example.nl": "nl"}},
        }
    )
    facts = _StoreContacts(facts_from_mapping({"transport": {"partner.example": "pkix"}}), env)
    outgoing = Collecting()
    gateway = Gateway(cfg, facts, env.store, outgoing, hostname="gw.test")  # type: ignore[arg-type]
    # bob's direct copy stays in the transaction: every notification is re-injected
    rcpts = ["bob@partner.example", "dave@oldmail.example", "nina@example.nl"]
    rcpts.append("erin@oldmail.example")
    raw = (
        "From: Dr. Alice <alice@hospital.example>\r\nTo: " + ", ".join(rcpts) + "\r\n"
        "Subject: results\r\nMessage-ID: <lang-1@hospital.example>\r\n\r\nSECRET\r\n"
    ).encode()
    head = raw.partition(b"\r\n\r\n")[0]
    headers = [
        (line.partition(":")[0], line.partition(":")[2].lstrip())
        for line in head.decode().split("\r\n")
    ]
    envelope = [f"<{r}>" for r in rcpts]
    tx = Transaction(
        "QID1", "<alice@hospital.example>", envelope, headers, io.BytesIO(raw), len(head) + 4,
        "127.0.0.1",
    )  # fmt: skip
    gateway.process(tx)
    languages: dict[str, str] = {}
    for out in outgoing.sent:
        if not out.what.startswith("notification"):
            continue
        assert isinstance(out.content, bytes)
        msg = message_from_bytes(out.content, policy=policy.default)
        if msg["Content-Language"]:
            (rcpt,) = out.recipients
            languages[rcpt] = str(msg["Content-Language"])
            plain = msg.get_body(("plain",))
            assert plain is not None
            if languages[rcpt] == "de":
                assert re.search(r"hat Ihnen eine sichere Nachricht gesendet", plain.get_content())
    assert languages == {
        "dave@oldmail.example": "de",
        "nina@example.nl": "en",
        "erin@oldmail.example": "en",
    }
