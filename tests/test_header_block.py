"""The raw header block: fields come out byte for byte as they went in, but for the change asked."""

from __future__ import annotations

from zivmilter.core.header_block import (
    header_fields,
    split_fields,
    unfolded,
    with_subject,
    without_fields,
)

HEAD = (
    b"From: a@x.example\r\n"
    b"Subject: [secure] the\r\n\tfolded one\r\n"
    b"Bcc: hidden@x.example\r\n"
    b"Subject: second\r\n"
    b"\r\n"
)


def test_fields_keep_their_folded_lines() -> None:
    assert split_fields(HEAD[:-2]) == [
        b"From: a@x.example\r\n",
        b"Subject: [secure] the\r\n\tfolded one\r\n",
        b"Bcc: hidden@x.example\r\n",
        b"Subject: second\r\n",
    ]


def test_dropping_fields_leaves_the_others_untouched() -> None:
    assert without_fields(HEAD, lambda name: name.lower() == "bcc") == (
        b"From: a@x.example\r\nSubject: [secure] the\r\n\tfolded one\r\nSubject: second\r\n\r\n"
    )
    assert without_fields(HEAD, lambda name: name.lower() == "cc") is None


def test_only_the_first_subject_is_rewritten() -> None:
    assert with_subject(HEAD, "the\n folded one") == (
        b"From: a@x.example\r\n"
        b"Subject: the\r\n folded one\r\n"
        b"Bcc: hidden@x.example\r\n"
        b"Subject: second\r\n"
        b"\r\n"
    )


def test_values_compare_unfolded() -> None:
    assert unfolded(" the\r\n\tfolded  one\r\n") == "the folded one"
    assert unfolded("a\x0cb") == "a\x0cb"  # a form feed is no folding white space
    assert header_fields(b"To: b@x.example,\r\n c@x.example\r\nX: y") == [
        ("To", "b@x.example,\n c@x.example"),
        ("X", "y"),
    ]
