"""The notification email: what the recipient sees, and what it must never carry."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.budget import examples
from zivmilter import defaults
from zivmilter.core import config
from zivmilter.core.message import header_message, parse_header_block
from zivmilter.mail import notification
from zivmilter.mail.notification import (
    NOTIFICATION_HEADER,
    Verification,
    draft_notification,
    language_for,
    mask_phone,
    notification_for,
    portal_link,
)

LINK = "https://secure.example.org/m/Tok3n_abcdefghijklmnopqrstuvwxyz012345"
BODY_MARK = "BODYMARKER-f00d"
ATTACH_MARK = "ATTACHMARKER-beef"
PHONE = "+31612345321"
CODE = "CODE-7781"


def original(subject: str = "Quarterly figures", extra: str = "") -> EmailMessage:
    raw = (
        "From: Alice Example <alice@example.org>\r\n"
        "To: Bob <bob@example.net>, carol@example.com\r\n"
        "Cc: dave@example.net\r\n"
        "Bcc: eve-hidden@example.net\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        "Message-ID: <orig-1@example.org>\r\n"
        "In-Reply-To: <prev-1@example.net>\r\n"
        "References: <root-1@example.net> <prev-1@example.net>\r\n"
        f"zivver-access-right: bob@example.net sms {PHONE}\r\n"
        f"ZIVVER-Access-Right: carol@example.com access-code {CODE}\r\n"
        "Zivver-Direct-Delivery: tls tls1.2 auth certificate-validation\r\n"
        "X-Custom-Secret: internal-routing-7\r\n"
        f"{extra}"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{BODY_MARK}\r\n"
        "--b1\r\n"
        'Content-Type: application/pdf; name="figures-q3.pdf"\r\n'
        'Content-Disposition: attachment; filename="figures-q3.pdf"\r\n'
        "\r\n"
        f"{ATTACH_MARK}\r\n"
        "--b1--\r\n"
    )
    msg = BytesParser(policy=policy.default).parsebytes(raw.encode("utf-8"))
    assert isinstance(msg, EmailMessage)
    return msg


def draft(
    orig: Message | None = None,
    verification: Verification | None = None,
    language: str = "en",
    subject_mode: str = "show",
) -> notification.Draft:
    return notification.draft_notification(
        orig or original(),
        recipient="bob@example.net",
        link=LINK,
        verification=verification or Verification("sms", phone=PHONE),
        language=language,
        subject_mode=subject_mode,  # type: ignore[arg-type]
        org_domain="example.org",
        org_name="Example Org",
    )


def build(
    orig: Message | None = None,
    verification: Verification | None = None,
    language: str = "en",
    subject_mode: str = "show",
) -> Message:
    return draft(orig, verification, language, subject_mode).message()


def wire(msg: Message) -> bytes:
    return msg.as_bytes(policy=policy.SMTP)


def reparse(msg: Message) -> EmailMessage:
    out = BytesParser(policy=policy.default).parsebytes(wire(msg))
    assert isinstance(out, EmailMessage)
    return out


def texts(msg: Message) -> tuple[str, str]:
    """The two parts as a recipient's mail reader decodes them from the wire."""
    msg = msg if isinstance(msg, EmailMessage) else reparse(msg)
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    return plain.get_content(), html.get_content()


# --- structure and headers ----------------------------------------------------------------


def test_structure_and_headers() -> None:
    msg = reparse(build())
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert msg["From"] == "Alice Example <alice@example.org>"
    assert msg["To"] == "Bob <bob@example.net>, carol@example.com"
    assert msg["Cc"] == "dave@example.net"
    assert msg["Subject"] == "Quarterly figures"
    assert msg["Date"] == "Mon, 01 Jan 2024 10:00:00 +0000"
    assert msg["In-Reply-To"] == "<prev-1@example.net>"
    assert msg["References"] == "<root-1@example.net> <prev-1@example.net>"
    assert msg["Message-ID"] != "<orig-1@example.org>"
    assert msg["Message-ID"].endswith("@example.org>")
    assert msg[NOTIFICATION_HEADER] == "1"
    assert msg["Content-Language"] == "en"
    assert "Bcc" not in msg
    assert "Auto-Submitted" not in msg
    assert msg.get_all("MIME-Version") == ["1.0"]


def test_each_notification_has_its_own_message_id() -> None:
    assert build()["Message-ID"] != build()["Message-ID"]


def test_link_in_both_parts() -> None:
    plain, html = texts(reparse(build()))
    assert LINK in plain
    assert f'href="{LINK}"' in html


# --- nothing of the content, no secrets -----------------------------------------------------


@pytest.mark.parametrize(
    "verification",
    [
        Verification("account"),
        Verification("sms", phone=PHONE),
        Verification("access_code", hint="the project name"),
        Verification("email"),
    ],
)
def test_no_content_no_secrets(verification: Verification) -> None:
    data = wire(build(verification=verification))
    decoded = str(reparse(build(verification=verification)))
    plain, html = texts(reparse(build(verification=verification)))
    for blob in (data.decode("ascii", "replace"), decoded, plain, html):
        for forbidden in (
            BODY_MARK,
            ATTACH_MARK,
            "figures-q3.pdf",
            PHONE,
            PHONE[1:],
            "612345321",
            CODE,
            "eve-hidden",
            "internal-routing-7",
        ):
            assert forbidden not in blob, forbidden
        assert "zivver" not in blob.lower()


def test_masked_number_shown_for_sms() -> None:
    plain, html = texts(reparse(build(verification=Verification("sms", phone=PHONE))))
    assert "+31 6•••••321" in plain
    assert "+31 6•••••321" in html


def test_verification_texts_en() -> None:
    cases = {
        "account": "Sign in with your Example Org account",
        "sms": "verification code by text message",
        "access_code": "access code that the sender gives you",
        "email": "verification code by email",
    }
    for kind, phrase in cases.items():
        plain, html = texts(build(verification=Verification(kind)))  # type: ignore[arg-type]
        assert phrase in plain, kind
        assert phrase in html, kind


def test_hint_shown_and_escaped() -> None:
    v = Verification("access_code", hint='<b onmouseover="x">our project</b>')
    plain, html = texts(reparse(build(verification=v)))
    assert 'The sender\'s hint: <b onmouseover="x">our project</b>' in plain
    assert "&lt;b onmouseover=&#34;x&#34;&gt;our project&lt;/b&gt;" in html
    assert "<b onmouseover" not in html


# --- languages and subjects -------------------------------------------------------------------


def test_english() -> None:
    plain, html = texts(reparse(build(language="en")))
    assert plain.startswith("Alice Example <alice@example.org> has sent you a secure message:")
    assert "Quarterly figures" in plain
    assert "do not forward this email" in plain
    assert '<html lang="en">' in html
    assert "Open the secure message" in html


def test_dutch() -> None:
    msg = reparse(build(language="nl"))
    plain, html = texts(msg)
    assert plain.startswith("Alice Example <alice@example.org> heeft u een beveiligd bericht")
    assert "verificatiecode per sms op +31 6•••••321" in plain
    assert "stuur deze e-mail niet door" in plain
    assert '<html lang="nl">' in html
    assert "Open het beveiligde bericht" in html
    assert msg["Content-Language"] == "nl"


def test_neutral_subject_hides_the_original() -> None:
    for lang in ("en", "nl"):
        msg = build(language=lang, subject_mode="neutral")
        assert msg["Subject"] == defaults.NEUTRAL_SUBJECT[lang]
        plain, html = texts(msg)
        assert "Quarterly figures" not in wire(msg).decode("ascii", "replace")
        assert "Quarterly figures" not in plain + html


def test_non_ascii_subject_round_trips() -> None:
    subject = "Überweisung für Zoë — 請求書 ✓"
    encoded = "=?utf-8?b?" + __import__("base64").b64encode(subject.encode()).decode() + "?="
    msg = build(original(encoded))
    data = wire(msg)
    header_block = data.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()  # RFC 2047 by the email package
    back = reparse(msg)
    assert back["Subject"] == subject
    plain, html = texts(back)
    assert subject in plain and subject in html


def test_malicious_subject_is_escaped_in_html() -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    plain, html = texts(reparse(build(original(evil))))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert evil in plain  # plain text is not HTML: shown as written


def test_folded_subject_does_not_break_headers() -> None:
    msg = reparse(build(original("line one\r\n line two")))
    assert msg["Subject"] == "line one line two"


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError):
        build(language="fr")


# --- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+31612345321", "+31 6•••••321"),
        ("+12025550123", "+1 2••••••123"),
        ("+447911123456", "+44 7••••••456"),
        ("+3521234567", "+352 •••••67"),
        ("+32 470 12 34 56", "+32 4•••••456"),
        ("+123", "•••"),
    ],
)
def test_mask_phone(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def test_language_for_domain_and_parents() -> None:
    cfg = config.NotificationConfig(language="en", languages={"example.nl": "nl"})
    assert language_for("a@example.nl", cfg) == "nl"
    assert language_for("a@Mail.Example.NL", cfg) == "nl"
    assert language_for("a@example.com", cfg) == "en"
    assert language_for("a@notexample.nl", cfg) == "en"


def test_portal_link() -> None:
    assert portal_link("https://s.example.org/", "T") == "https://s.example.org/m/T"
    assert portal_link("https://s.example.org/portal", "T") == "https://s.example.org/portal/m/T"


def test_notification_for_uses_config() -> None:
    cfg = config.from_mapping(
        {
            "organization": {"domains": ["example.org"], "name": "Gemeente Voorbeeld"},
            "portal": {"base_url": "https://veilig.example.org/"},
            "notification": {"subject": "neutral", "languages": {"example.net": "nl"}},
        }
    )
    draft = notification_for(original(), "bob@example.net", "TOKEN123", Verification("email"), cfg)
    msg = draft.message()
    plain, _ = texts(msg)
    assert "https://veilig.example.org/m/TOKEN123" in plain
    assert "Gemeente Voorbeeld" in plain
    assert msg["Subject"] == defaults.NEUTRAL_SUBJECT["nl"]
    assert msg["Message-ID"].endswith("@example.org>")


# --- the header short cut writes what compat32 folding writes ------------------------------

_COMPAT32_CRLF = policy.compat32.clone(linesep="\r\n")


@settings(max_examples=examples(3000), deadline=None)
@given(
    st.sampled_from(
        ["Subject", "To", "From", "Message-ID", "References", "X-Zivmilter-Notification"]
    ),
    st.text(
        alphabet=st.characters(max_codepoint=0x7F)
        | st.sampled_from([" ", "\t", ";", ",", "=", "?", "é", "€", "\x1e", "\x0b"]),
        max_size=120,
    ),
)
def test_header_short_cut_equals_compat32_folding(name: str, value: str) -> None:
    # control characters, line breaks, non-ASCII and long values take compat32's own path
    try:
        expected: bytes | type[Exception] = _COMPAT32_CRLF.fold_binary(name, value)
    except Exception as exc:  # compat32 refuses some values; so must we
        expected = type(exc)
    try:
        got: bytes | type[Exception] = notification._WIRE.fold_binary(name, value)
    except Exception as exc:
        got = type(exc)
    assert got == expected


def test_raw_utf8_headers_read_as_utf8() -> None:
    # RFC 6532 mail (8-bit header bytes, as many clients send): the names read right, not as
    # one replacement character per byte, and the notification encodes them (RFC 2047).
    head = "From: Jöhn Ström <john@example.org>\r\nTo: bob@example.net\r\nSubject: Résumé\r\n\r\n"
    orig = parse_header_block(head.encode("utf-8"))
    note = draft(orig, Verification("email")).wire()
    assert note.isascii()
    parsed = BytesParser(policy=policy.default).parsebytes(note)
    assert str(parsed["From"]) == "Jöhn Ström <john@example.org>"
    assert str(parsed["Subject"]) == "Résumé"
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Jöhn Ström <john@example.org>" in text and "Résumé" in text
    assert "\ufffd" not in text


def _note_for_jorg(original: Message) -> bytes:
    return notification.draft_notification(
        original,
        recipient="jörg@partner.example",
        link="https://secure.example/m/x",
        verification=notification.Verification("email"),
        language="en",
        subject_mode="show",
        org_domain="hospital.example",
        org_name="Hospital",
    ).wire()


def test_internationalized_address_stays_utf8_and_a_non_ascii_name_is_encoded() -> None:
    # RFC 2047 may encode a display name, never an address (RFC 6532 keeps that one UTF-8).
    original = Message()
    original["From"] = "Alice <alice@hospital.example>"
    original["To"] = "Jörg <jörg@partner.example>, José <jose@partner.example>"
    original["Cc"] = "José <jose@partner.example>"
    note = _note_for_jorg(original)
    head = note.split(b"\r\n\r\n")[0]
    assert 'To: "Jörg" <jörg@partner.example>, "José" <jose@partner.example>\r\n'.encode() in head
    assert b"Cc: =?utf-8?" in head and "José".encode() not in head.split(b"Cc:")[1]


def test_a_long_utf8_address_field_is_folded_between_addresses() -> None:
    original = Message()
    original["From"] = "alice@hospital.example"
    many = [f"Person {i} <person{i}@partner.example>" for i in range(40)]
    original["To"] = ", ".join(["Jörg <jörg@partner.example>", *many])
    note = _note_for_jorg(original)
    head = note.split(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    parsed = email.message_from_string(note.decode("utf-8"), policy=policy.SMTPUTF8)
    assert len(parsed["To"].addresses) == 41
    assert parsed["To"].addresses[0].addr_spec == "jörg@partner.example"


# --- the hot path writes what the email package writes ---------------------------------------

_WORDS = st.lists(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)
        | st.sampled_from(["é", "€", "ß", "日", "\t", '"', ",", "<", ">", "@"])
        | st.sampled_from(["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\r", "\x00"]),
        max_size=30,
    )
    | st.sampled_from(["Jörg <jörg@partner.example>", "=?utf-8?q?Caf=C3=A9?=", "a@b.example"]),
    max_size=3,
).map(" ".join)
_FIELD_VALUES = st.lists(_WORDS, min_size=1, max_size=4).map("\n ".join)  # as the MTA folds


@settings(max_examples=examples(400), deadline=None)
@given(
    fields=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "From",
                    "Sender",
                    "Reply-To",
                    "To",
                    "Cc",
                    "Date",
                    "Subject",
                    "In-Reply-To",
                    "References",
                    "Bcc",
                    "X-Other",
                ]
            ),
            _FIELD_VALUES,
        ),
        max_size=10,
    ),
    language=st.sampled_from(sorted(defaults.LANGUAGES)),
    subject_mode=st.sampled_from(["show", "neutral"]),
    verification=st.sampled_from(
        [
            Verification("account"),
            Verification("sms", phone=PHONE),
            Verification("access_code", hint="the café's name"),
            Verification("email"),
        ]
    ),
)
def test_wire_writes_what_the_email_generator_writes(
    fields: list[tuple[str, str]], language: str, subject_mode: str, verification: Verification
) -> None:
    note = draft(header_message(fields), verification, language, subject_mode)
    data = note.wire()
    assert data == note.message().as_bytes()
    # Equal to the generator, and as every mailer writes: a space after each field's colon
    # (the generator is no proof of that by itself; the milter once lost it, see
    # test_a_kept_notification_has_a_space_after_each_colon)
    for block in (data.partition(b"\r\n\r\n")[0], *_part_heads(data)):
        for field in block.split(b"\r\n"):
            if field and not field.startswith((b" ", b"\t")):
                name, colon, rest = field.partition(b":")
                assert colon and rest.startswith(b" ") and name.strip() == name, field


def _part_heads(data: bytes) -> list[bytes]:
    """The header blocks of a notification's two parts."""
    boundary = email.message_from_bytes(data).get_boundary()
    assert boundary is not None
    parts = data.split(b"--" + boundary.encode() + b"\r\n")[1:]
    assert len(parts) == 2
    return [part.partition(b"\r\n\r\n")[0] for part in parts]


@pytest.mark.parametrize(
    ("fields", "want_from", "want_to", "want_subject"),
    [
        # raw UTF-8 fields as the MTA hands them over, folded: unfolded, then encoded
        (
            [
                ("From", "Jöhn Ström\n <john@example.org>"),
                ("To", "Ann <a@x.example>,\n\tBö <b@x.example>"),
                ("Subject", "Résumé of the\n quarterly figures"),
            ],
            "Jöhn Ström <john@example.org>",
            "Ann <a@x.example>, Bö <b@x.example>",
            "Résumé of the quarterly figures",
        ),
        # a broken field the email package's parser cannot take (it raised IndexError):
        (
            [("From", "ß@"), ("To", "bob@example.net"), ("Subject", "x")],
            '"ß@"',  # shown as the text it was: it holds no address
            "bob@example.net",
            "x",
        ),
    ],
)
def test_folded_or_broken_non_ascii_fields_make_a_notification(
    fields: list[tuple[str, str]], want_from: str, want_to: str, want_subject: str
) -> None:
    note = draft(header_message(fields), Verification("email")).wire()
    assert note.isascii()
    parsed = BytesParser(policy=policy.default).parsebytes(note)
    assert str(parsed["From"]) == want_from
    assert str(parsed["To"]) == want_to
    assert str(parsed["Subject"]) == want_subject


@pytest.mark.parametrize(
    "fields",
    [
        # characters the email package's folding takes for line breaks: no field of their own
        [("From", "alice@example.org"), ("Subject", "x\x0bBcc: eve@example.net")],
        [("From", "alice@example.org"), ("To", "carol@example.com\x0cX-Injected: 1")],
        [("From", "alice@example.org"), ("References", "<a@b>\u2028X-Injected: é")],
        # the package's folder started a continuation line without white space here
        [("From", "00000 000000{é sms:+31612345678 000000{é"), ("To", "bob@example.net")],
    ],
)
def test_no_header_value_breaks_the_header_block(fields: list[tuple[str, str]]) -> None:
    note = draft(header_message(fields), Verification("email")).wire()
    head = note.partition(b"\r\n\r\n")[0]
    assert all(line[:1] in b" \t" or b":" in line for line in head.split(b"\r\n")), head
    parsed = BytesParser(policy=policy.default).parsebytes(note)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed[NOTIFICATION_HEADER] == "1"
    assert "Bcc" not in parsed and "X-Injected" not in parsed


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.words: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_data(self, data: str) -> None:
        self.words.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in ("br", "p"):
            self.words.append(" ")


# the one line of each plain part that the HTML part says with its button instead
_LINK_INTRO = {
    "en": "Open it with your personal link:",
    "nl": "Open het met uw persoonlijke link:",
    "de": "Öffnen Sie sie mit Ihrem persönlichen Link:",
}


@pytest.mark.parametrize("language", sorted(defaults.LANGUAGES))
@pytest.mark.parametrize(
    "verification",
    [
        Verification("email"),
        Verification("sms", phone=PHONE),
        Verification("access_code", hint="the name of our cat"),
        Verification("account"),
    ],
)
def test_html_part_has_a_language_alt_texts_and_says_what_the_plain_part_says(
    language: str, verification: Verification
) -> None:
    """Accessibility (WCAG 3.1.1, 1.1.1) and the same words for those who read either part; its
    contrast and reflow are checked in Chromium (tests/integration/test_portal_a11y.py)."""
    draft = draft_notification(
        original(), recipient="bob@example.net", link=LINK, verification=verification,
        language=language, subject_mode="show", org_domain="example.org", org_name="Example",
    )  # fmt: skip
    msg = BytesParser(policy=policy.default).parsebytes(draft.wire())
    assert isinstance(msg, EmailMessage)
    html_part, plain_part = msg.get_body(("html",)), msg.get_body(("plain",))
    assert html_part is not None and plain_part is not None
    html = html_part.get_content()
    assert f'<html lang="{language}">' in html
    parsed = _Text()
    parsed.feed(html)
    assert all(img.get("alt") for img in parsed.images)
    shown = " ".join("".join(parsed.words).split())
    plain = plain_part.get_content().replace(_LINK_INTRO[language], "")
    for line in plain.splitlines():
        words = " ".join(line.split())
        if words and words != "--":
            assert words in shown, (words, shown)


def test_a_long_field_is_folded_as_compat32_folds_it_each_time() -> None:
    # The milter folds a long To once per message, not once per notification (a cache): the
    # bytes stay those of a fresh compat32 policy, for the first notification and the next.
    from email._policybase import Compat32

    from zivmilter.mail.notification import _WIRE

    value = ", ".join(f"User {i} <user{i}@example.org>" for i in range(100))
    stock = Compat32(linesep="\r\n").fold_binary("To", value)
    assert _WIRE.fold_binary("To", value) == stock
    assert _WIRE.fold_binary("To", value) == stock
    assert _WIRE.fold_binary("Cc", value) == stock.replace(b"To:", b"Cc:", 1)
