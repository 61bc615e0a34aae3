"""Address forms as SMTP gives them: one bare form, one comparison key."""

from __future__ import annotations

import pytest

from zivmilter.core.addresses import bare_address, envelope_recipients, normalize_address


@pytest.mark.parametrize(
    ("given", "bare"),
    [
        ("<a@x.example>", "a@x.example"),
        (" < A@X.example > ", "A@X.example"),
        ("a@x.example", "a@x.example"),
        ("<>", ""),
        ("", ""),
        ("<a@x.example", "<a@x.example"),  # not enclosed: left as it is
    ],
)
def test_bare_form(given: str, bare: str) -> None:
    assert bare_address(given) == bare


def test_recipients_grouped_by_key_with_every_form_as_given() -> None:
    by_key, unusable = envelope_recipients(
        ["<Bob@X.example>", "<bob@x.example>", "<not an address>", "<c@x.example>"]
    )
    assert by_key == {
        "bob@x.example": ["<Bob@X.example>", "<bob@x.example>"],
        "c@x.example": ["<c@x.example>"],
    }
    assert [raw for raw, _why in unusable] == ["<not an address>"]
    assert "'not an address' is not a valid address" in unusable[0][1]
    assert normalize_address("<Bob@X.example>") == "bob@x.example"
