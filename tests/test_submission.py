"""Who may submit (SPEC 7): the pure decision with in-memory SPF and account fakes, the account
commands on a real store, and `explain` showing both submission and selection."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import BASE_CONFIG, make_config, merge
from tests.harness.cli import zivmilter_in_process
from zivmilter import crypto
from zivmilter.cli import accounts as account_commands
from zivmilter.core.config import Config, SubmissionRules
from zivmilter.core.submission import (
    SenderAccounts,
    SpfResult,
    SpfVerdict,
    StoreSenderAccounts,
    SubmissionResult,
    check,
)
from zivmilter.errors import ZivmilterError

ROOT = Path(__file__).parent.parent
OUTSIDE = "192.0.2.9"  # no trusted network contains it


# --- fakes (kept here: only these tests use them) ----------------------------------------------


@dataclass
class FakeSpf:
    """Verdicts per domain; records every question, so a test can see when SPF was not asked."""

    verdicts: dict[str, SpfVerdict] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    def check(self, client_ip: str, sender: str, helo: str | None = None) -> SpfResult:
        self.asked.append((client_ip, sender))
        domain = sender.rpartition("@")[2]
        return SpfResult(self.verdicts.get(domain, SpfVerdict.NONE), f"fake for {domain}")


@dataclass
class FakeAccounts:
    states: dict[str, bool] = field(default_factory=dict)

    def is_active_sender(self, address: str) -> bool | None:
        return self.states.get(address)


ACTIVE = FakeAccounts(
    {
        "alice@hospital.example": True,
        "sec@hospital.example": True,
        "bob@clinic.example": True,
        "gone@hospital.example": False,
    }
)

SUBMISSION: dict[str, Any] = {
    "organization": {"domains": ["hospital.example", "clinic.example"]},
    "submission": {
        "trusted_networks": ["10.1.0.0/16", "2001:db8:1::/48"],
        "logins": {
            "app1": ["hospital.example"],
            "Lab": ["lab@hospital.example", "bob@clinic.example"],
        },
        "spf": True,
    },
}


def cfg_with(**submission: Any) -> Config:
    return make_config(merge(SUBMISSION, {"submission": submission}))


def run_check(
    headers: list[tuple[str, str]],
    *,
    ip: str | None = OUTSIDE,
    login: str | None = None,
    env: str = "alice@hospital.example",
    spf: FakeSpf | None = None,
    accounts: SenderAccounts = ACTIVE,
    cfg: Config | None = None,
    rules: SubmissionRules | None = None,
) -> SubmissionResult:
    return check(
        cfg or cfg_with(),
        headers,
        client_ip=ip,
        auth_login=login,
        envelope_sender=env,
        spf=spf or FakeSpf(),
        accounts=accounts,
        rules=rules,
    )


def frm(*values: str) -> list[tuple[str, str]]:
    return [("From", v) for v in values] + [("To", "bob@partner.example"), ("Subject", "x")]


ALICE = frm("Dr. Alice <alice@hospital.example>")


def assert_rejected(result: SubmissionResult, fragment: str, code: str = "550") -> None:
    assert not result.accepted, result
    assert result.reply is not None and result.reply.startswith(f"{code} {code[0]}.7.1 "), result
    assert fragment in result.reply, result.reply
    assert result.code == code and result.status == f"{code[0]}.7.1"


# --- SMTP AUTH ---------------------------------------------------------------------------------


def test_login_allowed_for_the_from_domain() -> None:
    spf = FakeSpf()
    got = run_check(ALICE, login="app1", spf=spf)
    assert got.accepted and got.reply is None
    assert "SMTP AUTH login app1 may send as alice@hospital.example" in got.reason
    assert spf.asked == []  # authenticated: no DNS


def test_login_allowed_for_an_address_and_login_case_insensitive() -> None:
    got = run_check(frm("bob@clinic.example"), login="LAB", env="bob@clinic.example")
    assert got.accepted, got


def test_login_sending_for_another_domain_is_rejected() -> None:
    got = run_check(frm("bob@clinic.example"), login="app1", env="bob@clinic.example")
    assert_rejected(got, "login app1 may not send as bob@clinic.example")


def test_listed_login_is_bound_even_in_a_trusted_network() -> None:
    got = run_check(frm("bob@clinic.example"), login="app1", ip="10.1.2.3")
    assert_rejected(got, "login app1 may not send as bob@clinic.example")


def test_login_allowed_for_an_address_not_for_its_domain() -> None:
    got = run_check(frm("other@hospital.example"), login="lab")
    assert_rejected(got, "login lab may not send as other@hospital.example")


def test_unlisted_login_counts_as_no_login() -> None:
    assert run_check(ALICE, login="someone", ip="10.1.0.7").accepted
    got = run_check(ALICE, login="someone")
    assert_rejected(got, "not allowed to submit")
    assert "login someone is not in submission.logins" in got.reason


# --- trusted networks --------------------------------------------------------------------------


@pytest.mark.parametrize("ip", ["10.1.0.7", "10.1.255.255", "2001:db8:1::25", "::ffff:10.1.3.4"])
def test_trusted_network_client_passes(ip: str) -> None:
    spf = FakeSpf()
    got = run_check(ALICE, ip=ip, spf=spf)
    assert got.accepted and "trusted network" in got.reason, got
    assert spf.asked == []  # a trusted client never waits on DNS


def test_untrusted_unauthenticated_client_is_rejected_with_every_reason() -> None:
    got = run_check(ALICE, ip="10.2.0.1", cfg=cfg_with(spf=False))
    assert_rejected(got, "not allowed to submit")
    for fragment in (
        "not authenticated",
        "client 10.2.0.1 is not in submission.trusted_networks",
        "SPF is off",
    ):
        assert fragment in got.reason


def test_no_network_client_counts_as_localhost() -> None:
    local = cfg_with(trusted_networks=["127.0.0.1/32"])
    assert run_check(ALICE, ip=None, cfg=local).accepted
    got = run_check(ALICE, ip=None, cfg=cfg_with(trusted_networks=[]))
    assert_rejected(got, "local (127.0.0.1) is not in submission.trusted_networks")


def test_unparsable_client_address_is_not_trusted() -> None:
    got = run_check(ALICE, ip="unknown", cfg=cfg_with(trusted_networks=["0.0.0.0/0"]))
    assert_rejected(got, "not allowed to submit")


# --- SPF ---------------------------------------------------------------------------------------


def test_spf_pass_for_our_domain() -> None:
    spf = FakeSpf({"hospital.example": SpfVerdict.PASS})
    got = run_check(ALICE, spf=spf)
    assert got.accepted and f"SPF pass for client {OUTSIDE} and hospital.example" in got.reason
    assert spf.asked == [(OUTSIDE, "alice@hospital.example")]


@pytest.mark.parametrize(
    "verdict",
    [
        SpfVerdict.FAIL,
        SpfVerdict.SOFTFAIL,
        SpfVerdict.NEUTRAL,
        SpfVerdict.NONE,
        SpfVerdict.PERMERROR,
    ],
)
def test_spf_other_verdicts_reject(verdict: SpfVerdict) -> None:
    got = run_check(ALICE, spf=FakeSpf({"hospital.example": verdict}))
    assert_rejected(got, f"SPF {verdict.value} for hospital.example")


def test_spf_temperror_is_a_tempfail() -> None:
    got = run_check(ALICE, spf=FakeSpf({"hospital.example": SpfVerdict.TEMPERROR}))
    assert_rejected(got, "SPF temperror for hospital.example", code="451")
    assert got.tempfail


def test_spf_temperror_does_not_matter_for_a_trusted_client() -> None:
    got = run_check(ALICE, ip="10.1.0.1", spf=FakeSpf({"hospital.example": SpfVerdict.TEMPERROR}))
    assert got.accepted


def test_spf_pass_for_a_foreign_domain_is_not_enough() -> None:
    spf = FakeSpf({"partner.example": SpfVerdict.PASS})
    got = run_check(
        frm("x@partner.example"),
        env="x@partner.example",
        spf=spf,
        accounts=FakeAccounts({"x@partner.example": True}),
    )
    assert_rejected(got, "partner.example is not one of organization.domains")
    assert spf.asked == []


def test_spf_checks_envelope_and_from_domains_when_they_differ() -> None:
    spf = FakeSpf({"hospital.example": SpfVerdict.PASS, "clinic.example": SpfVerdict.PASS})
    got = run_check(frm("bob@clinic.example"), env="bounce@hospital.example", spf=spf)
    assert got.accepted, got
    assert spf.asked == [(OUTSIDE, "bounce@hospital.example"), (OUTSIDE, "bob@clinic.example")]
    spf = FakeSpf({"hospital.example": SpfVerdict.PASS, "clinic.example": SpfVerdict.FAIL})
    got = run_check(frm("bob@clinic.example"), env="bounce@hospital.example", spf=spf)
    assert_rejected(got, "SPF fail for clinic.example")


def test_spf_envelope_sender_of_a_foreign_domain_is_refused() -> None:
    spf = FakeSpf({"hospital.example": SpfVerdict.PASS})
    got = run_check(ALICE, env="bounces@esp.example", spf=spf)
    assert_rejected(got, "esp.example is not one of organization.domains")


def test_spf_null_sender_uses_the_from_address() -> None:
    spf = FakeSpf({"hospital.example": SpfVerdict.PASS})
    assert run_check(ALICE, env="<>", spf=spf).accepted
    assert spf.asked == [(OUTSIDE, "alice@hospital.example")]


def test_spf_fail_is_definite_even_with_a_temperror_elsewhere() -> None:
    spf = FakeSpf({"hospital.example": SpfVerdict.TEMPERROR, "clinic.example": SpfVerdict.FAIL})
    got = run_check(frm("bob@clinic.example"), env="x@hospital.example", spf=spf)
    assert_rejected(got, "SPF fail for clinic.example", code="550")


# --- the sender account ------------------------------------------------------------------------


def test_unknown_sender_is_rejected_naming_the_address() -> None:
    got = run_check(frm("new@hospital.example"), login="app1")
    assert_rejected(got, "sender new@hospital.example has no account")
    assert "SMTP AUTH login app1" in got.reason  # the reason says how far it got


def test_disabled_sender_is_rejected_naming_the_address() -> None:
    got = run_check(frm("Gone <GONE@hospital.example>"), login="app1")
    assert_rejected(got, "sender account gone@hospital.example is disabled")


def test_any_address_of_own_domains() -> None:
    cfg = cfg_with(any_address_of_own_domains=True)
    got = run_check(frm("new@hospital.example"), login="app1", cfg=cfg, accounts=FakeAccounts())
    assert got.accepted and "any address of hospital.example may send" in got.reason
    # Not for other domains: those still need an account.
    cfg = cfg_with(any_address_of_own_domains=True, logins={"x": ["partner.example"]})
    got = run_check(frm("p@partner.example"), login="x", cfg=cfg, accounts=FakeAccounts())
    assert_rejected(got, "sender p@partner.example has no account")
    # A disabled account of our domain is not rescued by the option... it is not consulted.
    got = run_check(
        frm("gone@hospital.example"), login="app1", cfg=cfg_with(any_address_of_own_domains=True)
    )
    assert got.accepted


# --- From, Sender: the decided cases -----------------------------------------------------------


def test_missing_from_is_rejected() -> None:
    got = run_check([("To", "bob@partner.example"), ("Subject", "x")], login="app1")
    assert_rejected(got, "message has no From header")


def test_from_without_address_is_rejected() -> None:
    got = run_check(frm("Undisclosed:;"), login="app1")
    assert_rejected(got, "the From header names no address")


def test_invalid_from_address_is_rejected() -> None:
    got = run_check(frm("alice@hospital.example, bad@x_y.example"), login="app1")
    assert_rejected(got, "From address bad@x_y.example is not valid")


def test_display_name_with_unquoted_comma_is_tolerated() -> None:
    assert run_check(frm("Jansen, Alice <alice@hospital.example>"), login="app1").accepted


def test_multiple_from_addresses_must_all_pass() -> None:
    both = frm("alice@hospital.example, bob@clinic.example")
    assert_rejected(run_check(both, login="app1"), "login app1 may not send as bob@clinic.example")
    assert run_check(
        both,
        login="lab",
        accounts=FakeAccounts({"alice@hospital.example": True, "bob@clinic.example": True}),
        cfg=cfg_with(logins={"lab": ["hospital.example", "clinic.example"]}),
    ).accepted
    got = run_check(frm("alice@hospital.example, gone@hospital.example"), login="app1")
    assert_rejected(got, "gone@hospital.example is disabled")
    # Two From header fields (not RFC 5322, seen in the wild) are read the same way.
    got = run_check(frm("alice@hospital.example", "bob@clinic.example"), login="app1")
    assert_rejected(got, "may not send as bob@clinic.example")


def test_sender_header_differing_from_from_must_pass_too() -> None:
    headers = [*ALICE, ("Sender", "Secretary <sec@hospital.example>")]
    got = run_check(headers, login="app1")
    assert got.accepted and "sec@hospital.example is an active sender account" in got.reason
    headers = [*ALICE, ("Sender", "outsider@partner.example")]
    assert_rejected(run_check(headers, login="app1"), "may not send as outsider@partner.example")
    headers = [*ALICE, ("Sender", "new@hospital.example")]
    assert_rejected(run_check(headers, login="app1"), "sender new@hospital.example has no account")


def test_sender_header_equal_to_from_adds_nothing() -> None:
    got = run_check([*ALICE, ("Sender", "ALICE@hospital.example")], login="app1")
    assert got.accepted and got.reason.count("alice@hospital.example is an active") == 1


def test_reply_text_is_printable_ascii_and_bounded() -> None:
    long_local = "ü" + "x" * 600
    got = run_check(frm(f"{long_local}@hospital.example"), login="app1")
    assert got.reply is not None and got.reply.isascii() and got.reply.isprintable()
    assert len(got.reply) <= 410


def test_listener_rules_replace_the_top_level_ones() -> None:
    # What a listener with rules of its own gets (the milter picks them by {daemon_name}).
    cfg = cfg_with()
    strict = cfg_with(trusted_networks=[]).submission
    assert run_check(ALICE, ip="10.1.0.1", cfg=cfg).accepted
    got = run_check(ALICE, ip="10.1.0.1", cfg=cfg, rules=strict)
    assert_rejected(got, "client 10.1.0.1 is not in submission.trusted_networks")


# --- the store as SenderAccounts, and `zivmilter account` --------------------------------------


@pytest.fixture
def store_config(tmp_path: Path) -> Path:
    key = tmp_path / "store.key"
    crypto.keygen(str(key))
    cfg = merge(BASE_CONFIG, {"store": {"path": str(tmp_path / "store"), "key_file": str(key)}})
    path = tmp_path / "zivmilter.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def account_cli(
    config: Path,
    *args: str,
    stdin: str | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> tuple[int, str]:
    """`zivmilter account ...` in-process, errors handled as cli.main does."""
    import contextlib
    import io

    parser = argparse.ArgumentParser(prog="zivmilter")
    account_commands.add_commands(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["account", *args, "--config", str(config)])
    out = io.StringIO()
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with contextlib.redirect_stdout(out):
        try:
            status: int = ns.handler(ns)
        except ZivmilterError as exc:
            return 2, str(exc)
    return status, out.getvalue()


def test_account_commands_drive_the_submission_check(store_config: Path) -> None:
    from zivmilter.store import SqliteStore

    assert account_cli(store_config, "add", "Alice@Hospital.example")[0] == 0
    status, text = account_cli(store_config, "add", "bob@partner.example", "--recipient")
    assert status == 0 and "password (hand it to the recipient" in text

    cfg = make_config(merge(SUBMISSION, {"submission": {"spf": False}}))
    raw = yaml.safe_load(store_config.read_text())
    store = SqliteStore.open(raw["store"]["path"], crypto.load_kek(raw["store"]["key_file"]))
    try:
        accounts = StoreSenderAccounts(store)
        assert accounts.is_active_sender("alice@hospital.example") is True
        assert accounts.is_active_sender("bob@partner.example") is None  # a recipient account
        assert accounts.is_active_sender("nobody@hospital.example") is None
        ok = run_check(ALICE, ip="10.1.0.1", cfg=cfg, accounts=accounts)
        assert ok.accepted, ok

        assert account_cli(store_config, "disable", "alice@hospital.example") == (
            0,
            "alice@hospital.example: disabled\n",
        )
        assert accounts.is_active_sender("alice@hospital.example") is False
        refused = run_check(ALICE, ip="10.1.0.1", cfg=cfg, accounts=accounts)
        assert refused.reply == "550 5.7.1 sender account alice@hospital.example is disabled"

        assert account_cli(store_config, "enable", "alice@hospital.example")[0] == 0
        assert accounts.is_active_sender("alice@hospital.example") is True
    finally:
        store.close()


# What `zivmilter account` refuses (exit 2, the reason), with Alice@Hospital.example a sender.
ACCOUNT_REFUSALS = [
    pytest.param(["add", "alice@hospital.example"], "already exists", id="exists-in-other-case"),
    pytest.param(
        ["add", "alice@hospital.example", "--recipient"], "sender account", id="exists-as-sender"
    ),
    pytest.param(
        ["add", "dave@hospital.example", "--password"],
        "a sender account has no password",
        id="sender-with-password",
    ),
    pytest.param(["disable", "nobody@hospital.example"], "does not exist", id="disable-unknown"),
    pytest.param(["add", "not-an-address"], "not a valid address", id="invalid-address"),
]


@pytest.mark.parametrize(("args", "reason"), ACCOUNT_REFUSALS)
def test_account_command_refuses(store_config: Path, args: list[str], reason: str) -> None:
    assert account_cli(store_config, "add", "Alice@Hospital.example")[0] == 0
    status, text = account_cli(store_config, *args)
    assert status == 2 and reason in text, text


def test_account_add_with_password_stores_a_hash(
    store_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zivmilter.store import SqliteStore

    pytest.importorskip("argon2", reason="recipient accounts need the portal extra")
    from zivmilter.portal.accounts import password_valid

    def add_carol(password: str) -> tuple[int, str]:
        """`account add carol@partner.example --recipient --password`, typing `password`."""
        args = ("add", "carol@partner.example", "--recipient", "--password")
        return account_cli(store_config, *args, stdin=password + "\n", monkeypatch=monkeypatch)

    status, text = add_carol("short")
    assert status == 2 and "at least" in text
    status, text = add_carol("correct horse battery")
    assert status == 0, text
    assert "correct horse" not in text
    raw = yaml.safe_load(store_config.read_text())
    store = SqliteStore.open(raw["store"]["path"], crypto.load_kek(raw["store"]["key_file"]))
    try:
        account = store.account("carol@partner.example")
    finally:
        store.close()
    assert account is not None and account.kind == "recipient" and account.password_hash
    assert "correct horse" not in account.password_hash
    assert password_valid(account.password_hash, "correct horse battery")
    assert not password_valid(account.password_hash, "correct horse")


def test_account_list(store_config: Path) -> None:
    account_cli(store_config, "add", "alice@hospital.example")
    account_cli(store_config, "add", "bob@partner.example", "--recipient")
    account_cli(store_config, "disable", "bob@partner.example")
    status, text = account_cli(store_config, "list")
    assert status == 0
    assert text.splitlines() == [
        "bob@partner.example\trecipient disabled password",
        "alice@hospital.example\tsender active",
    ]


# --- explain shows submission and selection ----------------------------------------------------

MESSAGE = (
    "From: Dr. Alice <alice@hospital.example>\r\nTo: bob@partner.example\r\n"
    "Cc: carol@oldmail.example\r\nSubject: {subject}\r\nMessage-ID: <m1@hospital.example>\r\n"
    "\r\nBody.\r\n"
)


def explain(
    tmp_path: Path,
    config: dict[str, Any],
    facts: dict[str, Any] | None,
    subject: str = "Lab results",
    *extra: str,
) -> dict[str, Any]:
    cfg_file = tmp_path / "zivmilter.yaml"
    cfg_file.write_text(yaml.safe_dump(merge(BASE_CONFIG, config)))
    msg = tmp_path / "m.eml"
    msg.write_bytes(MESSAGE.format(subject=subject).encode())
    args = ["explain", str(msg), "--config", str(cfg_file), "--json", *extra]
    if facts is not None:
        facts_file = tmp_path / "facts.yaml"
        facts_file.write_text(yaml.safe_dump(facts))
        args += ["--facts", str(facts_file)]
    proc = zivmilter_in_process(*args)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_explain_default_client_is_local_and_trusted(tmp_path: Path) -> None:
    out = explain(tmp_path, {}, {"senders": ["alice@hospital.example"]})
    assert out["submission"]["accepted"] is True and out["submission"]["reply"] is None
    assert "no --client-ip given: assumed a local client (127.0.0.1)" in out["submission"]["reason"]
    assert "alice@hospital.example is an active sender account" in out["submission"]["reason"]
    assert out["selected"] is True and "mode is all" in out["selection_reason"]


def test_explain_unknown_sender_is_refused(tmp_path: Path) -> None:
    out = explain(tmp_path, {}, None)
    assert out["submission"] == {
        "accepted": False,
        "reply": "550 5.7.1 sender alice@hospital.example has no account at this gateway",
        "reason": out["submission"]["reason"],
    }


def test_explain_client_ip_and_login(tmp_path: Path) -> None:
    config = {
        "submission": {
            "trusted_networks": ["127.0.0.1/32"],
            "spf": False,
            "logins": {"app1": ["clinic.example"]},
            "any_address_of_own_domains": True,
        }
    }
    out = explain(tmp_path, config, None, "Lab results", "--client-ip", "127.0.0.9")
    assert out["submission"]["reply"].startswith("550 5.7.1 not allowed to submit")
    assert "client 127.0.0.9 is not in submission.trusted_networks" in out["submission"]["reason"]
    out = explain(tmp_path, config, None, "x", "--client-ip", "127.0.0.9", "--auth", "app1")
    reply = out["submission"]["reply"]
    assert reply == "550 5.7.1 login app1 may not send as alice@hospital.example"
    out = explain(tmp_path, config, None, "Lab results", "--client-ip", "127.0.0.1")
    assert out["submission"]["accepted"] is True
    assert "any address of hospital.example may send" in out["submission"]["reason"]


def test_explain_unselected_message_passes(tmp_path: Path) -> None:
    config = {"selection": {"mode": "rules", "subject_triggers": ["[secure]"]}}
    out = explain(tmp_path, config, {"senders": ["alice@hospital.example"]})
    assert out["selected"] is False
    assert out["selection_reason"] == "no selection rule matched (selection.mode is rules)"
    assert [(r["address"], r["delivery"], r["method"]) for r in out["recipients"]] == [
        ("bob@partner.example", "pass", "none"),
        ("carol@oldmail.example", "pass", "none"),
    ]


def test_explain_selected_by_trigger_shows_new_subject(tmp_path: Path) -> None:
    config = {
        "selection": {"mode": "rules", "subject_triggers": ["[secure]"], "remove_trigger": True}
    }
    out = explain(tmp_path, config, {"senders": ["alice@hospital.example"]}, "Lab [secure] results")
    assert out["selected"] is True and "'[secure]'" in out["selection_reason"]
    assert out["new_subject"] == "Lab results"
    assert all(r["delivery"] == "notification" for r in out["recipients"])


def test_explain_text_output_shows_both(tmp_path: Path) -> None:
    cfg_file = tmp_path / "zivmilter.yaml"
    cfg_file.write_text(yaml.safe_dump(merge(BASE_CONFIG, {"selection": {"mode": "rules"}})))
    msg = tmp_path / "m.eml"
    msg.write_bytes(MESSAGE.format(subject="x").encode())
    proc = zivmilter_in_process("explain", str(msg), "--config", str(cfg_file))
    assert proc.returncode == 0, proc.stderr
    assert "Submission: REFUSED with 550 5.7.1 sender alice@hospital.example" in proc.stdout
    assert "Selected: no" in proc.stdout
    assert "pass" in proc.stdout


def test_explain_bad_client_ip_is_one_line(tmp_path: Path) -> None:
    cfg_file = tmp_path / "zivmilter.yaml"
    cfg_file.write_text(yaml.safe_dump(BASE_CONFIG))
    msg = tmp_path / "m.eml"
    msg.write_bytes(MESSAGE.format(subject="x").encode())
    proc = zivmilter_in_process(
        "explain", str(msg), "--config", str(cfg_file), "--client-ip", "nonsense"
    )
    assert proc.returncode == 2 and "--client-ip: 'nonsense' is not an IP address" in proc.stderr
    assert "Traceback" not in proc.stderr
