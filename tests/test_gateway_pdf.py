"""The gateway's encrypted PDF (encryption.pdf, issue 26), in-process with a real store and a
recording MTA: the sender's access code makes a mail with a PDF that qpdf opens with that code
to the message and its attachment; nothing readable outside it, the code stored nowhere, the
text in the recipient's language. (Through the real Postfix: tests/integration.)"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.fakes import Collecting, make_config
from tests.test_gateway import transaction
from tests.test_pdf import _attachment, _decrypt, _run, _text, _tool
from zivmilter.core.facts import facts_from_mapping
from zivmilter.gateway import Gateway
from zivmilter.store import SqliteStore

CODE = "tulip-42-meadow"
CANARY = "CANARY-gwpdf-7781"
BINARY = bytes(range(256)) * 8
ALICE = "<alice@hospital.example>"


def _raw(to: str, code: str = CODE) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = to
    msg["Subject"] = "Lab results"
    msg["Message-ID"] = "<pdf1@hospital.example>"
    msg["zivver-access-right"] = f"{to} access-code {code}"
    msg.set_content(f"Dear Bob,\n\n{CANARY}\n")
    msg.add_attachment(BINARY, maintype="application", subtype="octet-stream", filename="lab.bin")
    return msg.as_bytes(policy=email.policy.SMTP)


def _gateway(store: SqliteStore, pdf: bool = True, **extra: object) -> tuple[Gateway, Collecting]:
    cfg = make_config({
        "submission": {"any_address_of_own_domains": True},
        "encryption": {"pdf": pdf},
        **extra,
    })  # fmt: skip
    facts = facts_from_mapping({"transport": {"partner.example": "tls", "partner.nl": "none"}})
    mta = Collecting()
    return Gateway(cfg, facts, store, mta, hostname="gw.test"), mta


def _kept_mail(plan: object) -> bytes:
    head = "".join(f"{n}: {v}\r\n" for n, v in plan.add_headers)  # type: ignore[attr-defined]
    return head.encode() + b"\r\n" + plan.replace_body  # type: ignore[attr-defined]


def _words(part: EmailMessage) -> str:
    """A text part as the words a reader reads: its paragraphs wrapped to the line, whatever
    the width of the file name in them."""
    return " ".join(part.get_content().split())


def test_the_access_code_opens_a_pdf_of_the_message_and_its_attachment(
    store: SqliteStore, tmp_path: Path
) -> None:
    gw, mta = _gateway(store)
    plan = gw.process(transaction(_raw("bob@partner.example"), ALICE, ["bob@partner.example"]))
    assert mta.sent == []  # the one copy stays in the transaction
    assert ("X-Zivmilter-Route", "direct-tls") in plan.add_headers  # at the level found
    wire = _kept_mail(plan)
    assert CANARY.encode() not in wire and CODE.encode() not in wire
    assert b"zivver-access-right" not in wire.lower()
    mail = email.message_from_bytes(wire, policy=email.policy.default)
    # the Subject as a notification shows it: the original's field stays in the transaction
    assert mail["Subject"] is None and not any(n == "Subject" for n, _ in plan.delete_headers)
    text, attached = list(mail.iter_parts())
    assert "opens with the access code that the sender gives you" in _words(text)
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_filename() == "secure-message.pdf"
    plain = _decrypt(attached.get_payload(decode=True), tmp_path, CODE)
    assert CANARY in _text(plain)
    assert _attachment(plain, "lab.bin") == BINARY
    (record,) = store.find_messages("<pdf1@hospital.example>")
    (rcpt,) = store.recipients(record.id)
    assert (rcpt.method, rcpt.delivery, rcpt.rule) == ("pdf", "direct", "K")
    assert rcpt.access_code_hash is None and rcpt.verification is None  # the code kept nowhere


def test_no_other_password_opens_it(store: SqliteStore, tmp_path: Path) -> None:
    gw, _ = _gateway(store)
    plan = gw.process(transaction(_raw("bob@partner.example"), ALICE, ["bob@partner.example"]))
    mail = email.message_from_bytes(_kept_mail(plan), policy=email.policy.default)
    src = tmp_path / "m.pdf"
    src.write_bytes(list(mail.iter_parts())[1].get_payload(decode=True))
    for args in (["--password=tulip-42-meadoW"], []):
        done = _run(_tool("qpdf"), *args, "--decrypt", str(src), str(tmp_path / "out.pdf"))
        assert done.returncode != 0


def test_dutch_recipient_reads_dutch_and_a_neutral_subject(
    store: SqliteStore, tmp_path: Path
) -> None:
    gw, _ = _gateway(store, notification={"languages": {"partner.nl": "nl"}, "subject": "neutral"})
    plan = gw.process(transaction(_raw("bob@partner.nl"), ALICE, ["bob@partner.nl"]))
    assert not any(n == "X-Zivmilter-Route" for n, _ in plan.add_headers)  # none: the relay
    mail = email.message_from_bytes(_kept_mail(plan), policy=email.policy.default)
    assert mail["Subject"] == "Beveiligd bericht"
    text, attached = list(mail.iter_parts())
    assert "opent met de toegangscode" in _words(text)
    assert attached.get_filename() == "beveiligd-bericht.pdf"
    assert "Onderwerp" in _text(_decrypt(attached.get_payload(decode=True), tmp_path, CODE))


def test_german_recipient_reads_german_in_the_mail_and_the_pdf(
    store: SqliteStore, tmp_path: Path
) -> None:
    gw, _ = _gateway(
        store,
        notification={"languages": {"partner.de": "de"}, "subject": "neutral"},
        branding={"support": {"phone": "+49 30 555 0100"}},
    )
    plan = gw.process(transaction(_raw("bob@partner.de"), ALICE, ["bob@partner.de"]))
    mail = email.message_from_bytes(_kept_mail(plan), policy=email.policy.default)
    assert mail["Subject"] == "Sichere Nachricht" and mail["Content-Language"] == "de"
    text, attached = list(mail.iter_parts())
    words = _words(text)
    assert words.startswith("Dr. Alice <alice@hospital.example> hat Ihnen eine sichere Nachricht")
    assert "Zum Öffnen benötigen Sie den Zugangscode, den Ihnen der Absender außerhalb der" in words
    assert "Bewahren Sie den Zugangscode getrennt von dieser E-Mail auf." in words
    assert "Telefon: +49 30 555 0100" in words
    assert "opens" not in words and "PDF reader" not in words  # nothing left in English
    assert attached.get_filename() == "sichere-nachricht.pdf"
    shown = " ".join(_text(_decrypt(attached.get_payload(decode=True), tmp_path, CODE)).split())
    assert "Von: Dr. Alice <alice@hospital.example> An: bob@partner.de" in shown
    assert "Betreff: Lab results Dear Bob, " + CANARY in shown
    assert "Anhänge (öffnen Sie diese im Bereich „Anlagen“ Ihres PDF-Programms):" in shown
    assert "From:" not in shown and "Subject:" not in shown


def test_off_the_access_code_means_the_portal(store: SqliteStore) -> None:
    gw, _ = _gateway(store, pdf=False)
    plan = gw.process(transaction(_raw("bob@partner.example"), ALICE, ["bob@partner.example"]))
    mail = email.message_from_bytes(_kept_mail(plan), policy=email.policy.default)
    assert mail["X-Zivmilter-Notification"] == "1"
    assert not any(p.get_content_type() == "application/pdf" for p in mail.walk())


def test_a_short_code_keeps_the_portal(store: SqliteStore) -> None:
    gw, _ = _gateway(store)
    raw = _raw("bob@partner.example", code="tulip-42")
    plan = gw.process(transaction(raw, ALICE, ["bob@partner.example"]))
    mail = email.message_from_bytes(_kept_mail(plan), policy=email.policy.default)
    assert mail["X-Zivmilter-Notification"] == "1"


# The text the PDF of `_raw(to)` lays out, counted by hand: From, To and Subject as given (it has
# no Cc or Date), and the plain-text body (UTF-8, a line end one byte); the attachment not.
def _text_bytes(to: str) -> int:
    fields = ["Dr. Alice <alice@hospital.example>", to, "Lab results"]
    return sum(len(f) for f in fields) + len(f"Dear Bob,\n\n{CANARY}\n")


# Each cap on the encrypted PDF: the key, what it measures of `_raw(to)`, and the log line's
# words for a message `size` bytes over a cap of `size - 1`.
PDF_CAPS = [
    pytest.param(
        "pdf_max_bytes",
        lambda to: len(_raw(to)),
        "the message is {size} bytes, over encryption.pdf_max_bytes ({cap})",
        id="size",
    ),
    pytest.param(
        "pdf_max_text_bytes",
        _text_bytes,
        "the message's text is {size} bytes, over encryption.pdf_max_text_bytes ({cap})",
        id="text",
    ),
]


@pytest.mark.parametrize(("key", "measure", "words"), PDF_CAPS)
def test_a_message_over_a_pdf_cap_gets_a_notification_and_one_line_in_the_log(
    store: SqliteStore,
    caplog: pytest.LogCaptureFixture,
    key: str,
    measure: Callable[[str], int],
    words: str,
) -> None:
    raw = _raw("bob@partner.example")
    size = measure("bob@partner.example")
    gw, mta = _gateway(store, encryption={"pdf": True, key: size - 1})
    with caplog.at_level(logging.INFO, logger="zivmilter"):
        plan = gw.process(transaction(raw, ALICE, ["bob@partner.example"]))
    wire = _kept_mail(plan)
    mail = email.message_from_bytes(wire, policy=email.policy.default)
    assert mail["X-Zivmilter-Notification"] == "1"  # the portal, as without encryption.pdf
    assert not any(p.get_content_type() == "application/pdf" for p in mail.walk())
    assert CANARY.encode() not in wire and BINARY not in wire  # nothing of the content left
    (record,) = store.find_messages("<pdf1@hospital.example>")
    (rcpt,) = store.recipients(record.id)
    assert (rcpt.method, rcpt.delivery) == ("custom_access_right", "notification")
    said = [r.getMessage() for r in caplog.records if "no encrypted PDF" in r.getMessage()]
    assert said == [
        "no encrypted PDF: "
        + words.format(size=size, cap=size - 1)
        + "; a notification instead to bob@partner.example"
    ]
    logged = caplog.text
    assert CANARY not in logged and CODE not in logged
    assert mta.sent == []


@pytest.mark.parametrize(("key", "measure", "words"), PDF_CAPS)
def test_a_message_at_a_pdf_cap_is_still_a_pdf(
    store: SqliteStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    key: str,
    measure: Callable[[str], int],
    words: str,
) -> None:
    raw = _raw("bob@partner.example")
    gw, _ = _gateway(store, encryption={"pdf": True, key: measure("bob@partner.example")})
    with caplog.at_level(logging.INFO, logger="zivmilter"):
        plan = gw.process(transaction(raw, ALICE, ["bob@partner.example"]))
    mail = email.message_from_bytes(_kept_mail(plan), policy=email.policy.default)
    _text_part, attached = list(mail.iter_parts())
    plain = _decrypt(attached.get_payload(decode=True), tmp_path, CODE)
    assert CANARY in _text(plain) and _attachment(plain, "lab.bin") == BINARY
    assert "no encrypted PDF" not in caplog.text


def test_a_message_over_both_caps_is_logged_once_for_its_size(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    raw = _raw("bob@partner.example")
    gw, _ = _gateway(
        store, encryption={"pdf": True, "pdf_max_bytes": len(raw) - 1, "pdf_max_text_bytes": 1}
    )
    with caplog.at_level(logging.INFO, logger="zivmilter"):
        gw.process(transaction(raw, ALICE, ["bob@partner.example"]))
    said = [r.getMessage() for r in caplog.records if "no encrypted PDF" in r.getMessage()]
    assert len(said) == 1 and "pdf_max_bytes" in said[0], said
