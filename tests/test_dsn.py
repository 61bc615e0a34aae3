"""RFC 3464 reports for failed recipients, checked with Python's own MIME parser."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

import pytest

from zivmilter.core.headers import DIRECTIVE_HEADERS, is_directive
from zivmilter.errors import MessageError
from zivmilter.mail.dsn import Failure, build_dsn, reported_failures

PHONE = "+31612345321"
CODE = "CODE-7781"
ARRIVAL = datetime(2024, 3, 5, 14, 30, 0, tzinfo=UTC)


def original() -> EmailMessage:
    raw = (
        "Received: from app.example.org by mail.example.org; Tue, 5 Mar 2024 14:30:00 +0000\r\n"
        "From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.org>\r\n"
        "To: bob@example.net, carol@example.com\r\n"
        "Bcc: eve-hidden@example.net\r\n"
        "Subject: Dossier 2024-118\r\n"
        "Message-ID: <orig-7@example.org>\r\n"
        f"zivver-access-right: bob@example.net sms {PHONE}\r\n"
        f"ZIVVER-ACCESS-RIGHT: carol@example.com access-code {CODE}\r\n"
        "Zivver-Direct-Delivery: tls tls1.2 auth certificate-validation\r\n"
        "zivver-Minimum-Recipient-Verification: email-verification\r\n"
        "\r\n"
        "Body that must not be in the report\r\n"
    )
    msg = BytesParser(policy=policy.default).parsebytes(raw.encode())
    assert isinstance(msg, EmailMessage)
    return msg


FAILED = [
    ("bob@example.net", "5.7.1", "The recipient's mail server does not offer TLS 1.2"),
    Failure("carol@example.com", "5.7.30", "No verification method is allowed for this recipient"),
]


def build() -> EmailMessage:
    return build_dsn(original(), "jurgen@example.org", FAILED, "mail.example.org", ARRIVAL)


def reparse(msg: EmailMessage) -> EmailMessage:
    out = BytesParser(policy=policy.default).parsebytes(msg.as_bytes(policy=policy.SMTP))
    assert isinstance(out, EmailMessage)
    return out


def test_mime_structure() -> None:
    msg = reparse(build())
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert msg.get_all("MIME-Version") == ["1.0"]
    assert not msg.defects and not any(p.defects for p in msg.walk())


def test_top_level_headers() -> None:
    msg = reparse(build())
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.example.org"
    assert msg["To"] == "jurgen@example.org"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<orig-7@example.org>"
    assert msg["Message-ID"].endswith("@mail.example.org>")
    assert "Bcc" not in msg


def test_delivery_status_fields() -> None:
    msg = reparse(build())
    status = list(msg.iter_parts())[1]
    blocks: list[Message] = status.get_payload()  # type: ignore[assignment]
    assert len(blocks) == 3
    assert blocks[0]["Reporting-MTA"] == "dns; mail.example.org"
    assert blocks[0]["Arrival-Date"] == "Tue, 05 Mar 2024 14:30:00 +0000"
    bob, carol = blocks[1], blocks[2]
    assert bob["Final-Recipient"] == "rfc822; bob@example.net"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.7.1"
    assert bob["Diagnostic-Code"].strip() == (
        "x-zivmilter; The recipient's mail server does not offer TLS 1.2"
    )
    assert carol["Final-Recipient"] == "rfc822; carol@example.com"
    assert carol["Status"] == "5.7.30"


def test_human_text_explains_each_recipient() -> None:
    part = next(reparse(build()).iter_parts())
    text = part.get_content().replace("\r\n", "\n")
    assert "could not be delivered" in text
    bob = "<bob@example.net>:\n    The recipient's mail server does not offer TLS 1.2 (5.7.1)"
    assert bob in text
    assert "No verification method is allowed for this recipient (5.7.30)" in text
    assert "Subject: Dossier 2024-118" in text


def test_original_headers_without_directives_or_bcc() -> None:
    msg = reparse(build())
    headers_part = list(msg.iter_parts())[2]
    text = headers_part.get_content()
    copied = BytesParser(policy=policy.default).parsebytes(text.encode(), headersonly=True)
    names = [n.lower() for n in copied]
    assert names == ["received", "from", "to", "subject", "message-id"]
    assert copied["Subject"] == "Dossier 2024-118"
    assert copied["From"] == "Jürgen <jurgen@example.org>"


def test_no_secret_anywhere_in_the_report() -> None:
    data = build().as_bytes(policy=policy.SMTP).decode("ascii", "replace")
    for forbidden in (PHONE, "612345321", CODE, "eve-hidden", "Body that must not"):
        assert forbidden not in data
    assert "zivver-" not in data.lower()


def test_non_ascii_reason_stays_ascii_in_diagnostic_code() -> None:
    msg = build_dsn(
        original(),
        "jurgen@example.org",
        [("bob@example.net", "5.7.1", "Géén TLS\nvan de MX")],
        "mail.example.org",
        ARRIVAL,
    )
    status = list(reparse(msg).iter_parts())[1]
    blocks: list[Message] = status.get_payload()  # type: ignore[assignment]
    assert blocks[1]["Diagnostic-Code"] == "x-zivmilter; G??n TLS van de MX"


def test_null_sender_gets_no_report() -> None:
    with pytest.raises(MessageError):
        build_dsn(original(), "", FAILED, "mail.example.org", ARRIVAL)
    with pytest.raises(MessageError):
        build_dsn(original(), "<>", FAILED, "mail.example.org", ARRIVAL)


@pytest.mark.parametrize("status", ["4.7.1", "2.0.0", "5.7", "x"])
def test_only_permanent_statuses(status: str) -> None:
    with pytest.raises(ValueError):
        build_dsn(
            original(), "a@example.org", [("b@example.net", status, "r")], "h.example", ARRIVAL
        )


def test_needs_a_failure() -> None:
    with pytest.raises(ValueError):
        build_dsn(original(), "a@example.org", [], "h.example", ARRIVAL)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("zivver-access-right", True),
        ("ZIVVER-ACCESS-RIGHT", True),
        ("Zivver-Direct-Delivery", True),
        ("zivver-minimum-recipient-verification", True),
        (" zivver-direct-delivery ", True),
        ("zivver-other", False),
        ("X-Zivmilter-Route", False),
        ("Subject", False),
    ],
)
def test_is_directive(name: str, expected: bool) -> None:
    assert is_directive(name) is expected
    assert len(DIRECTIVE_HEADERS) == 3


def test_long_and_internationalized_original_recipient_stays_one_plain_field() -> None:
    # An ORCPT echo is written as given, however long: never as RFC 2047 encoded words.
    long_local = "a" * 70
    report = build_dsn(
        original(),
        "jurgen@example.org",
        [
            Failure(f"{long_local}@example.net", "5.7.1", "no", f"rfc822;{long_local}@example.net"),
            Failure("bob@example.net", "5.7.1", "no", "rfc822; Bob+one@example.net"),
        ],
        "gw.example.org",
        ARRIVAL,
    ).as_bytes()
    assert f"Original-Recipient: rfc822;{long_local}@example.net\n".encode() in report
    assert f"Final-Recipient: rfc822; {long_local}@example.net\n".encode() in report
    assert b"=?" not in report.split(b"message/delivery-status")[1].split(b"\n--")[0]


def test_failures_follow_notify_orcpt_and_survive_undecodable_bytes() -> None:
    # (moved from test_milter_adapter.py with the function, which left gateway.py)
    params = {
        "<never@x.example>": ("NOTIFY=NEVER",),
        "<success@x.example>": ("NOTIFY=SUCCESS,DELAY",),
        "<orcpt@x.example>": ("ORCPT=rfc822;J+C3+B6rg+2Bx@x.example", "NOTIFY=FAILURE"),
    }
    failed = [
        ("<never@x.example>", "5.7.1", "r"),
        ("<success@x.example>", "5.7.1", "r"),
        ("<orcpt@x.example>", "5.7.1", "r"),
        ("<a@x.nl\udcff>", "5.1.3", "'a@x.nl\udcff' is not a valid address"),
    ]
    got = reported_failures(failed, params)
    assert got == [
        ("orcpt@x.example", "5.7.1", "r", "rfc822; Jörg+x@x.example"),
        ("a@x.nl\ufffd", "5.1.3", "'a@x.nl\ufffd' is not a valid address", None),
    ]


def test_from_is_the_organizations_address_when_given() -> None:
    # At the organization's domain, a per-domain DKIM signer signs it and it aligns (issue 23).
    msg = reparse(
        build_dsn(
            original(), "jurgen@example.org", FAILED, "mail.example.org", ARRIVAL,
            from_address="MAILER-DAEMON@example.org",
        )
    )  # fmt: skip
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@example.org"
    assert b"Reporting-MTA: dns; mail.example.org" in msg.as_bytes()
