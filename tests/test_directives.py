"""Directive header parsing (SPEC 2): spellings, errors as data, and never an exception."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.budget import examples
from zivmilter.core.directives import AccessKind, parse, unfold
from zivmilter.core.headers import DIRECTIVE_HEADERS
from zivmilter.core.levels import TlsVersion

RCPTS = frozenset({"a@x.example", "b@y.example"})


def test_secrets_never_appear_in_reports() -> None:
    found = parse(
        [
            ("zivver-access-right", "a@x.example access-code s3cret-code"),
            ("zivver-access-right", "a@x.example sms +31699999999"),
            ("zivver-access-right", "z@x.example access-code other-secret"),
        ],
        RCPTS,
    )
    assert found.access_rights["a@x.example"].value == "s3cret-code"
    text = " ".join(str(i) for i in found.issues) + repr(found)
    assert "s3cret-code" not in text and "+31699999999" not in text and "other-secret" not in text
    assert len(found.issues) == 2


# (header, value, the secret in it, the line as reports show it)
LEAKY_LINES = [
    ("zivver-access-right", "a@x.example +31612345678", "+31612345678", "a@x.example ***"),
    ("zivver-access-right", "sms +31687654321 a@x.example", "+31687654321", "***"),
    ("zivver-access-right", "a@x.example access-code:s3cretcode", "s3cretcode", "a@x.example ***"),
    ("zivver-access-right", "+31612345678 sms a@x.example", "+31612345678", "*** sms ***"),
    ("zivver-access-right", "a@x.example s3cretcode", "s3cretcode", "a@x.example ***"),
    ("zivver-access-right", "a@x.example smss +31612345678", "+31612345678", "a@x.example ***"),
    ("zivver-access-right", "z@x.example sms +31612345678", "+31612345678", "z@x.example sms ***"),
    ("zivver-access-right", "=?utf-8?q?z@x.example_access-code_t=C3=BClip?=", "lip", None),
    ("zivver-direct-delivery", "a@x.example sms +31612345678", "+31612345678", "***"),
    ("zivver-direct-delivery", "tls s3cretcode", "s3cretcode", "tls ***"),
    ("zivver-minimum-recipient-verification", "s3cretcode", "s3cretcode", "***"),
]


@pytest.mark.parametrize(("header", "value", "secret", "shown"), LEAKY_LINES)
def test_a_secret_anywhere_in_a_line_is_never_reported(
    header: str, value: str, secret: str, shown: str | None
) -> None:
    found = parse([(header, value)], RCPTS)
    assert found.issues, "the line must be reported"
    for issue in found.issues:
        assert secret not in str(issue) and secret not in issue.problem
        if shown is not None:
            assert issue.value == shown


@settings(max_examples=examples(400), deadline=None)
@given(
    st.sampled_from(DIRECTIVE_HEADERS),
    st.lists(
        st.sampled_from(
            ["a@x.example", "sms", "access-code", "tls", "auth", "tls1.3", "email-verification"]
        )
        | st.just("SECRET"),
        max_size=5,
    ),
    st.from_regex(r"\A[A-Z0-9+]{6,12}\Z"),
)
def test_reports_show_only_words_that_are_no_secret(
    header: str, words: list[str], secret: str
) -> None:
    line = " ".join(secret if w == "SECRET" else w for w in words)
    for issue in parse([(header, line), (header, line)], RCPTS).issues:
        assert secret not in str(issue)


def test_access_code_may_contain_spaces() -> None:
    found = parse([("zivver-access-right", "a@x.example access-code blue  tulip")], RCPTS)
    right = found.access_rights["a@x.example"]
    assert (right.kind, right.value) == (AccessKind.ACCESS_CODE, "blue tulip")


def test_encoded_words_are_decoded() -> None:
    # What an application using the email package sends for a non-ASCII access code.
    msg = EmailMessage(policy=SMTP)
    msg["zivver-access-right"] = "a@x.example access-code tülip"
    sent = msg.as_bytes().decode("ascii").partition(":")[2].strip()
    assert "=?utf-8?" in sent
    found = parse([("zivver-access-right", sent)], RCPTS)
    assert found.access_rights["a@x.example"].value == "tülip" and not found.issues
    whole = parse(
        [
            ("zivver-access-right", "=?utf-8?q?b@y.example_access-code_t=C3=BClip?="),
            ("zivver-direct-delivery", "=?utf-8?q?tls_tls1.3?="),
        ],
        RCPTS,
    )
    assert whole.access_rights["b@y.example"].value == "tülip" and not whole.issues
    assert whole.direct_delivery is not None
    assert whole.direct_delivery.tls_version is TlsVersion.TLS1_3


@pytest.mark.parametrize(
    "value",
    [
        "a@x.example access-code =?x-no-such-charset?q?tulip?=",
        "a@x.example access-code =?utf-8?q?t=FClip?=",  # not UTF-8
        "a@x.example access-code =?unknown-8bit?q?t=FClip?=",
        "a@x.example access-code tülip =?utf-8?q?x?=",  # 8-bit text beside an encoded word
    ],
)
def test_undecodable_encoded_words_are_reported_and_ignored(value: str) -> None:
    found = parse([("zivver-access-right", value)], RCPTS)
    assert not found.access_rights
    assert [str(i) for i in found.issues] == [
        "zivver-access-right: 'a@x.example access-code ***': "
        "undecodable RFC 2047 encoded word; ignored"
    ]


def test_undecodable_direct_delivery_still_counts_with_the_defaults() -> None:
    found = parse([("zivver-direct-delivery", "=?x-no-such-charset?q?tls_tls1.3?=")], RCPTS)
    assert found.direct_delivery is not None
    assert found.direct_delivery.tls_version is TlsVersion.TLS1_2
    assert "undecodable RFC 2047 encoded word" in found.issues[0].problem


def test_direct_delivery_variants() -> None:
    assert (
        parse(
            [("Zivver-Direct-Delivery", "tls tls1.3 auth certificate-validation")], RCPTS
        ).direct_delivery.tls_version
        is TlsVersion.TLS1_3
    )  # type: ignore[union-attr]
    second = parse(
        [("zivver-direct-delivery", "tls tls1.2"), ("zivver-direct-delivery", "tls tls1.3")], RCPTS
    )
    assert second.direct_delivery is not None
    assert second.direct_delivery.tls_version is TlsVersion.TLS1_2
    assert "repeated header" in str(second.issues[0])
    absent = parse([("Subject", "hi")], RCPTS)
    assert absent.direct_delivery is None and not absent.issues


@pytest.mark.parametrize(
    ("value", "version", "problems"),
    [
        ("auth tls tls1.3", TlsVersion.TLS1_3, ["no value for auth; using certificate-validation"]),
        ("tls auth certificate-validation", TlsVersion.TLS1_2, ["no value for tls; using tls1.2"]),
        ("tls", TlsVersion.TLS1_2, ["no value for tls; using tls1.2"]),
        ("tls tls1.3 auth", TlsVersion.TLS1_3, ["no value for auth; using certificate-validation"]),
    ],
)
def test_a_key_without_its_value_leaves_the_next_key_alone(
    value: str, version: TlsVersion, problems: list[str]
) -> None:
    found = parse([("zivver-direct-delivery", value)], RCPTS)
    assert found.direct_delivery is not None
    assert found.direct_delivery.tls_version is version
    assert [i.problem for i in found.issues] == problems


def test_verification_override_spellings() -> None:
    for value in ("email-verification", "verification-email", "EMAIL-VERIFICATION"):
        assert parse(
            [("zivver-minimum-recipient-verification", value)], RCPTS
        ).email_verification_allowed
    bad = parse([("zivver-minimum-recipient-verification", "none")], RCPTS)
    assert not bad.email_verification_allowed and bad.issues


def test_unfold() -> None:
    assert unfold("a@x.example\r\n\tsms\r\n +3161") == "a@x.example sms +3161"


header_names = st.sampled_from(
    ["zivver-access-right", "ZIVVER-DIRECT-DELIVERY", "zivver-minimum-recipient-verification", "X"]
)


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.tuples(header_names, st.text()), max_size=6), st.lists(st.text(), max_size=3))
def test_arbitrary_header_text_never_raises(
    headers: list[tuple[str, str]], rcpts: list[str]
) -> None:
    found = parse(headers, frozenset(rcpts) | RCPTS)
    for issue in found.issues:
        assert str(issue)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    st.sampled_from(["sms", "access-code", "accessCode"]),
)
def test_arbitrary_values_after_a_valid_prefix(value: str, method: str) -> None:
    found = parse([("zivver-access-right", f"a@x.example {method} {value}")], RCPTS)
    assert len(found.access_rights) + len(found.issues) == 1
