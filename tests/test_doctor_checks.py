"""The pure Postfix checks of `zivmilter doctor` (ops/checks.py), on hand-made postconf values.

The end-to-end proof against a real Postfix is tests/integration/test_doctor.py; these rows
cover the spellings a real main.cf may use that the shipped snippets do not.
"""

from __future__ import annotations

import pytest

from zivmilter.core import config as config_mod
from zivmilter.ops.checks import (
    PostfixView,
    Service,
    check_dkim_order,
    check_milter_lists,
    check_reinject_listener,
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


ZM, SIGNER = "inet:127.0.0.1:9900", "inet:127.0.0.1:8891"
REINJECT = Service(
    "127.0.0.1:10026",
    "inet",
    "smtpd",
    {
        "smtpd_milters": SIGNER,
        "non_smtpd_milters": "",
        "receive_override_options": "no_address_mappings",
    },
)
SHIPPED_REINJECT = Service(
    "127.0.0.1:10026", "inet", "smtpd", {"smtpd_milters": "", "non_smtpd_milters": ""}
)
REPLIES = Service("127.0.0.1:10027", "inet", "smtpd", {"smtpd_milters": SIGNER})


@pytest.mark.parametrize(
    ("main", "services", "failing", "fix"),
    [
        # the README's wiring: zivmilter first, the signer alone on both listeners
        (
            {"smtpd_milters": f"{ZM}, {SIGNER}", "non_smtpd_milters": ZM},
            (REINJECT, REPLIES),
            set(),
            "",
        ),
        # no signer at all: nothing to wire, and the shipped empty listeners are right
        (
            {"smtpd_milters": ZM, "non_smtpd_milters": ZM},
            (SHIPPED_REINJECT,),
            set(),
            "",
        ),
        (
            {"smtpd_milters": f"{SIGNER} {ZM}", "non_smtpd_milters": ZM},
            (REINJECT, REPLIES),
            {"dkim-order"},
            f"postconf -e 'smtpd_milters = {ZM}, {SIGNER}'",
        ),
        (
            {"smtpd_milters": f"{ZM}, {SIGNER}", "non_smtpd_milters": ZM},
            (SHIPPED_REINJECT, REPLIES),
            {"dkim-reinject"},
            f"under 127.0.0.1:10026: -o smtpd_milters={SIGNER}",
        ),
        (
            {"smtpd_milters": f"{ZM}, {SIGNER}", "non_smtpd_milters": ZM},
            (
                Service(
                    "127.0.0.1:10026",
                    "inet",
                    "smtpd",
                    {
                        "smtpd_milters": SIGNER,
                        "non_smtpd_milters": "",
                        "receive_override_options": "a,no_milters",
                    },
                ),
                REPLIES,
            ),
            {"dkim-reinject"},
            "-o receive_override_options=a",
        ),
        (
            {"smtpd_milters": f"{ZM}, {SIGNER}", "non_smtpd_milters": ZM},
            (REINJECT, Service("127.0.0.1:10027", "inet", "smtpd", {"smtpd_milters": "inet:x:1"})),
            {"dkim-replies"},
            f"under 127.0.0.1:10027: -o smtpd_milters=inet:x:1,{SIGNER}",
        ),
    ],
)
def test_dkim_signer_wiring(
    main: dict[str, str], services: tuple[Service, ...], failing: set[str], fix: str
) -> None:
    view = PostfixView(main=main, services=services)
    checks = list(check_dkim_order(view, CFG))
    assert [c.id for c in checks] == ["dkim-order", "dkim-reinject", "dkim-replies"]
    assert {c.id for c in checks if not c.ok} == failing
    assert fix in " | ".join(c.fix for c in checks)
    # a signer alone on the re-injection listener is not zivmilter running there
    assert all(c.ok for c in check_reinject_listener(view, CFG) if c.id == "reinject-no-milters")
