"""The pure Postfix checks of `zivmilter doctor` (ops/checks.py), on hand-made postconf values.

The end-to-end proof against a real Postfix is tests/integration/test_doctor.py; these rows
cover the spellings a real main.cf may use that the shipped snippets do not.
"""

from __future__ import annotations

import pytest

from zivmilter.core import config as config_mod
from zivmilter.ops.checks import (
    PostfixView,
    check_milter_lists,
    milter_entries,
    postfix_socket,
)

CFG = config_mod.from_mapping(
    {"organization": {"domains": ["hospital.example"]}, "milter": {"socket": "inet:9900@127.0.0.1"}}
)


@pytest.mark.parametrize(
    ("libmilter", "postfix"),
    [
        ("inet:9900@127.0.0.1", "inet:127.0.0.1:9900"),
        ("inet6:9900@::1", "inet:[::1]:9900"),
        ("unix:/run/zivmilter/zivmilter.sock", "unix:/run/zivmilter/zivmilter.sock"),
        ("local:/run/z.sock", "unix:/run/z.sock"),
        ("/run/z.sock", "unix:/run/z.sock"),
    ],
)
def test_socket_spellings(libmilter: str, postfix: str) -> None:
    assert postfix_socket(libmilter) == postfix


def test_milter_lists_with_per_milter_settings() -> None:
    value = "inet:127.0.0.1:8891, { inet:127.0.0.1:9900, default_action=accept }"
    assert milter_entries(value) == [
        ("inet:127.0.0.1:8891", {}),
        ("inet:127.0.0.1:9900", {"default_action": "accept"}),
    ]


@pytest.mark.parametrize(
    ("main", "failing"),
    [
        (
            {
                "smtpd_milters": "inet:127.0.0.1:8891 inet:127.0.0.1:9900",
                "non_smtpd_milters": "inet:127.0.0.1:9900",
                "milter_default_action": "tempfail",
            },
            set(),
        ),
        (
            {
                "smtpd_milters": "{ inet:127.0.0.1:9900, default_action=accept }",
                "non_smtpd_milters": "inet:127.0.0.1:9900",
                "milter_default_action": "tempfail",
            },
            {"milter-default-action"},
        ),
        (
            {"smtpd_milters": "", "non_smtpd_milters": "", "milter_default_action": "tempfail"},
            {"smtpd-milters", "non-smtpd-milters"},
        ),
    ],
)
def test_milter_lists(main: dict[str, str], failing: set[str]) -> None:
    checks = list(check_milter_lists(PostfixView(main=main), CFG))
    assert {c.id for c in checks if not c.ok} == failing
    assert all(c.fix for c in checks if not c.ok)
