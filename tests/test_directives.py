"""Directive header parsing (SPEC 2): spellings, errors as data, and never an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zivmilter.directives import AccessKind, parse, unfold
from zivmilter.levels import TlsVersion

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


def test_access_code_may_contain_spaces() -> None:
    found = parse([("zivver-access-right", "a@x.example access-code blue  tulip")], RCPTS)
    right = found.access_rights["a@x.example"]
    assert (right.kind, right.value) == (AccessKind.ACCESS_CODE, "blue tulip")


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


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_names, st.text()), max_size=6), st.lists(st.text(), max_size=3))
def test_arbitrary_header_text_never_raises(
    headers: list[tuple[str, str]], rcpts: list[str]
) -> None:
    found = parse(headers, frozenset(rcpts) | RCPTS)
    for issue in found.issues:
        assert str(issue)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    st.sampled_from(["sms", "access-code", "accessCode"]),
)
def test_arbitrary_values_after_a_valid_prefix(value: str, method: str) -> None:
    found = parse([("zivver-access-right", f"a@x.example {method} {value}")], RCPTS)
    assert len(found.access_rights) + len(found.issues) == 1
