"""Header helpers shared by explain, the gateway, notifications and DSNs."""

from __future__ import annotations

from email.header import decode_header, make_header

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.budget import examples
from zivmilter.core.message import (
    addresses,
    build_envelope,
    decoded_header,
    header_message,
    parse_header_block,
    read_headers,
)
from zivmilter.errors import MessageError


def test_decoded_header() -> None:
    assert decoded_header("=?utf-8?q?R=C3=B6ntgen?= results") == "Röntgen results"
    assert decoded_header("line one\r\n line two") == "line one line two"
    assert decoded_header("=?bogus-charset?q?x?=") == "=?bogus-charset?q?x?="
    assert decoded_header(None) == ""


def test_read_headers_needs_a_header_block() -> None:
    with pytest.raises(MessageError, match="no header fields"):
        read_headers(b"\x89PNG\r\n\x1a\n")
    assert read_headers(b"Subject: x\r\nTo: a@b.example\r\n\r\nbody")[0] == ("Subject", "x")


def test_envelope_normalizes_and_dedupes() -> None:
    headers = [("To", "Bob <BOB@Partner.example>"), ("Cc", "c@x.example, nonsense")]
    env = build_envelope(
        "<A@Hospital.example>", ["<bob@partner.example>", "BOB@partner.example"], headers
    )
    assert env.sender == "a@hospital.example"
    assert env.recipients == ("bob@partner.example",)
    assert env.to_cc == frozenset({"bob@partner.example", "c@x.example"})
    assert addresses(headers, "Cc") == ["c@x.example"]
    assert build_envelope("<>", ["x@y.example"], []).sender == ""


def test_header_fields_read_as_utf8_however_they_come() -> None:
    # pymilter hands 8-bit header values over as UTF-8 text (invalid bytes as surrogates); a
    # header block parsed from bytes keeps them as surrogates: both read the same way.
    raw = "From: Jöhn <j@example.org>\r\nSubject: Grüße \xa0\r\n\r\n".encode()
    from_block = parse_header_block(raw)
    from_fields = header_message([("From", "Jöhn <j@example.org>"), ("Subject", "Grüße \xa0")])
    for msg in (from_block, from_fields):
        assert msg["From"] == "Jöhn <j@example.org>"
        assert decoded_header(msg["Subject"]) == "Grüße"
    invalid = header_message([("Subject", b"caf\xe9".decode("utf-8", "surrogateescape"))])
    assert invalid["Subject"] == "caf\ufffd"  # Latin-1 in a UTF-8 world: one replacement


@settings(max_examples=examples(500), deadline=None)
@given(
    st.text(
        alphabet=st.characters(codec="utf-8")
        | st.sampled_from(["\r", "\n", " ", "=", "?", "\udcc3"])
    )
)
def test_decoded_header_short_cut_equals_decoding(text: str) -> None:
    # Text without "=?" has no encoded word: the short cut must say what decoding says.
    assume("=?" not in text)
    assert decoded_header(text) == " ".join(str(make_header(decode_header(text))).split())
