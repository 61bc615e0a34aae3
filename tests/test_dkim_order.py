"""The DKIM wiring checks (zivmilter/core/dkim.py): a signature seen before a rewrite, and the
milter order read from postconf values. The real signer runs in tests/integration/test_dkim_e2e.py.
"""

from __future__ import annotations

from zivmilter.core import dkim

SIG = (
    "DKIM-Signature",
    "v=1; a=rsa-sha256; c=relaxed/simple; d=Hospital.example;\n\ts=zm1; h=From",
)
FOREIGN = ("DKIM-Signature", "v=1; d=partner.example; s=x")
OWN = ("hospital.example",)


def test_signature_of_our_domain_on_a_rewritten_message_is_reported() -> None:
    headers = [SIG, FOREIGN, ("From", "a@hospital.example")]
    assert dkim.signed_before_rewrite(headers, OWN, rewrites=True) == ("hospital.example",)
    assert dkim.signed_before_rewrite(headers, OWN, rewrites=False) == ()
    assert dkim.signed_before_rewrite([FOREIGN], OWN, rewrites=True) == ()


ZM, SIGNER = "inet:127.0.0.1:9900", "inet:127.0.0.1:8891"
LISTENER = "127.0.0.1:10026"


def problems(main: dict[str, str], services: dict[str, str]) -> list[str]:
    return [p.parameter for p in dkim.postfix_order_problems(main, services, ZM, LISTENER)]


def test_the_readme_wiring_has_no_problem() -> None:
    main = {"smtpd_milters": f"{ZM}, {SIGNER}", "non_smtpd_milters": f"{ZM} {SIGNER}"}
    services = {
        f"{LISTENER}/inet/smtpd_milters": SIGNER,
        f"{LISTENER}/inet/receive_override_options": "no_unknown_recipient_checks",
    }
    assert problems(main, services) == []


def test_signer_first_and_the_shipped_listener_are_reported_with_the_fix() -> None:
    main = {"smtpd_milters": f"{SIGNER}, {ZM}", "non_smtpd_milters": f"{{ {SIGNER}, x=y }} {ZM}"}
    services = {
        f"{LISTENER}/inet/smtpd_milters": "",
        f"{LISTENER}/inet/receive_override_options": "no_address_mappings,no_milters",
    }
    found = dkim.postfix_order_problems(main, services, ZM, LISTENER)
    assert [p.parameter for p in found] == [
        "smtpd_milters",
        "non_smtpd_milters",
        f"{LISTENER}/inet/smtpd_milters",
    ]
    assert found[0].fix == f"smtpd_milters = {ZM}, {SIGNER}"
    assert found[2].fix == f"-o smtpd_milters={SIGNER}"
    services[f"{LISTENER}/inet/smtpd_milters"] = SIGNER
    found = dkim.postfix_order_problems(main, services, ZM, LISTENER)
    assert found[-1].fix == "-o receive_override_options=no_address_mappings"
