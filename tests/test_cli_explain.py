"""`zivmilter explain` and `check-config` as an admin runs them, on real files: through
`cli.main` in this process, and `check-config` once as a real `python -m zivmilter` process."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.harness.cli import zivmilter, zivmilter_in_process
from tests.harness.messages import nested_message
from zivmilter import defaults

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


run = zivmilter_in_process


def explain_json(*extra: str) -> dict:  # type: ignore[type-arg]
    proc = run(
        "explain",
        str(EXAMPLES / "secure-message.eml"),
        "--config",
        str(EXAMPLES / "zivmilter.yaml"),
        "--facts",
        str(EXAMPLES / "facts.yaml"),
        "--json",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # exactly one JSON object


def test_json_shape_and_decisions() -> None:
    out = explain_json()
    assert set(out) >= {"recipients", "warnings"}
    by = {r["address"]: r for r in out["recipients"]}
    assert list(by) == [
        "bob@partner.example",
        "carol@oldmail.example",
        "care@care.example",
        "s@x.example",
    ]
    for r in out["recipients"]:
        assert set(r) == {
            "address",
            "method",
            "delivery",
            "level",
            "rule",
            "conversation",
            "access_right",
            "reason",
        }
    assert (by["carol@oldmail.example"]["method"], by["carol@oldmail.example"]["access_right"]) == (
        "custom_access_right",
        "sms",
    )
    assert (by["care@care.example"]["delivery"], by["care@care.example"]["level"]) == (
        "direct",
        "dane",
    )
    assert by["s@x.example"]["conversation"] == 2  # Bcc: a conversation of its own
    assert by["bob@partner.example"]["conversation"] == 1
    assert any("first line wins" in w for w in out["warnings"])
    assert any("not a recipient" in w for w in out["warnings"])
    text = json.dumps(out)
    assert "+31612345678" not in text and "tulip" not in text  # secrets never printed


def test_rcpt_and_from_override_the_headers() -> None:
    out = explain_json(
        "--rcpt",
        "Carol@OldMail.example",
        "--rcpt",
        "new@else.example",
        "--from",
        "x@hospital.example",
    )
    assert [r["address"] for r in out["recipients"]] == [
        "carol@oldmail.example",
        "new@else.example",
    ]
    assert out["recipients"][1]["conversation"] == 2  # not in To/Cc: a Bcc


def test_human_output_is_a_table() -> None:
    proc = run(
        "explain",
        str(EXAMPLES / "secure-message.eml"),
        "--config",
        str(EXAMPLES / "zivmilter.yaml"),
    )
    assert proc.returncode == 0
    assert (
        "recipient" in proc.stdout and "email_verification" in proc.stdout and "Why:" in proc.stdout
    )


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    cfg = str(EXAMPLES / "zivmilter.yaml")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text(
        "organization: {domains: [a.example]}\npolicy: {transport_security_compliance: pkx}\n"
    )
    no_domains = tmp_path / "no-domains.yaml"
    no_domains.write_text("organization: {domains: []}\n")
    twice = tmp_path / "twice.yaml"
    twice.write_text("organization: {domains: [a.example]}\n" * 2)
    cases = [
        (("explain", str(junk), "--config", cfg), "not an email message"),
        (("explain", str(tmp_path / "missing.eml"), "--config", cfg), "cannot read"),
        (
            ("explain", str(EXAMPLES / "secure-message.eml"), "--config", str(bad_cfg)),
            "'pkx' is not one of",
        ),
        (
            ("explain", str(EXAMPLES / "secure-message.eml"), "--config", cfg, "--rcpt", "bad@"),
            "not a valid address",
        ),
        (("check-config", str(bad_cfg)), "policy.transport_security_compliance"),
        (("check-config", str(no_domains)), f"{no_domains}: organization.domains: required"),
        (
            ("check-config", str(twice)),
            f"{twice}: organization: duplicate key on line 2 (first given on line 1)",
        ),
    ]
    for args, fragment in cases:
        proc = run(*args)
        assert proc.returncode != 0, args
        assert fragment in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_check_config_ok() -> None:
    proc = zivmilter("check-config", str(EXAMPLES / "zivmilter.yaml"))  # the real entry point
    assert proc.returncode == 0 and ": ok" in proc.stdout


def test_json_shows_submission_and_selection() -> None:
    # An unlisted login counts as none; 127.0.0.1 is trusted in the example configuration.
    out = explain_json("--client-ip", "127.0.0.1", "--auth", "nobody")
    assert set(out["submission"]) == {"accepted", "reply", "reason"}
    assert isinstance(out["submission"]["accepted"], bool)
    assert "client 127.0.0.1 is in trusted network 127.0.0.0/8" in out["submission"]["reason"]
    assert out["selected"] is True
    assert out["selection_reason"] == "selection.mode is all: every message is secured"


def test_human_output_shows_submission_and_selection() -> None:
    message, config = EXAMPLES / "secure-message.eml", EXAMPLES / "zivmilter.yaml"
    proc = run("explain", str(message), "--config", str(config))
    assert proc.returncode == 0
    assert "Submission: " in proc.stdout and "Selected: yes" in proc.stdout
    assert "assumed a local client (127.0.0.1)" in proc.stdout


LEAKY_MESSAGE = """\
From: alice@hospital.example
To: carol@oldmail.example, dave@oldmail.example
zivver-access-right: carol@oldmail.example +31612345678
zivver-access-right: sms +31687654321 dave@oldmail.example
zivver-access-right: dave@oldmail.example access-code:s3cretcode
zivver-direct-delivery: tls 0611112222
Subject: x

body
"""


def test_misplaced_secrets_are_never_printed(tmp_path: Path) -> None:
    message = tmp_path / "leak.eml"
    message.write_text(LEAKY_MESSAGE)
    args = ("explain", str(message), "--config", str(EXAMPLES / "zivmilter.yaml"))
    text, as_json = run(*args), run(*args, "--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    for secret in ("31612345678", "31687654321", "s3cretcode", "0611112222"):
        assert secret not in text.stdout and secret not in as_json.stdout
    assert json.loads(as_json.stdout)["warnings"] == [
        "zivver-access-right: 'carol@oldmail.example ***': expected '<recipient> <method> <value>'",
        "zivver-access-right: '***': the first word is not a valid recipient address",
        "zivver-access-right: 'dave@oldmail.example ***': expected '<recipient> <method> <value>'",
        "zivver-direct-delivery: 'tls ***': unknown tls value '***'; using tls1.2",
    ]
    assert "  - zivver-access-right: 'carol@oldmail.example ***'" in text.stdout


def explain_with(tmp_path: Path, config: str, facts: str, to: str) -> dict:  # type: ignore[type-arg]
    """One recipient's JSON from `explain --facts` with the given config and facts files."""
    cfg, facts_file, message = tmp_path / "z.yaml", tmp_path / "facts.yaml", tmp_path / "m.eml"
    cfg.write_text("organization: {domains: [hospital.example], nta7516: true}\n" + config)
    facts_file.write_text(facts)
    message.write_text(f"From: a@hospital.example\nTo: {to}\nSubject: x\n\nbody\n")
    proc = run("explain", str(message), "--config", str(cfg), "--facts", str(facts_file), "--json")
    assert proc.returncode == 0, proc.stderr
    (recipient,) = json.loads(proc.stdout)["recipients"]
    return recipient  # type: ignore[no-any-return]


def test_config_lists_count_on_top_of_the_facts_file(tmp_path: Path) -> None:
    idd = explain_with(
        tmp_path,
        "idd: {domains: [hospital2.example]}\n",
        "accounts: [bob@hospital2.example]\ntransport: {hospital2.example: pkix}\n",
        "bob@hospital2.example",
    )
    assert (idd["rule"], idd["delivery"], idd["level"]) == ("A1", "direct", "pkix")
    nta = explain_with(
        tmp_path,
        "nta7516: {domains: [care.example]}\n",
        "transport: {care.example: dane}\n",
        "x@care.example",
    )
    assert (nta["rule"], nta["delivery"], nta["level"]) == ("A2", "direct", "dane")
    assert "nta7516.domains" in nta["reason"]
    excluded = explain_with(
        tmp_path,
        "nta7516: {exclude: [care2.example]}\n",
        "nta7516: [care2.example]\ntransport: {care2.example: dane}\n",
        "y@care2.example",
    )
    assert (excluded["rule"], excluded["delivery"]) == ("A7", "notification")


def test_ntamx_next_hop_is_shown_only_when_there_is_one(tmp_path: Path) -> None:
    ntamx = explain_with(
        tmp_path,
        "",
        "nta7516:\n  care.example: {ntamx: [mx1.nta.example, mx2.nta.example], transport: pkix}\n"
        "transport: {care.example: none}\n",
        "x@care.example",
    )
    assert (ntamx["rule"], ntamx["delivery"], ntamx["level"]) == ("A2", "direct", "pkix")
    assert ntamx["next_hop"] == ["mx1.nta.example", "mx2.nta.example"]
    assert "delivered to its ntamx hosts mx1.nta.example, mx2.nta.example" in ntamx["reason"]
    assert list(ntamx)[-1] == "next_hop"  # added after the keys every recipient has
    plain = explain_with(
        tmp_path, "", "nta7516: [care.example]\ntransport: {care.example: pkix}\n", "x@care.example"
    )
    assert list(plain) == [
        "address",
        "method",
        "delivery",
        "level",
        "rule",
        "conversation",
        "access_right",
        "reason",
    ]


def test_short_access_codes_are_used_but_warned_about(tmp_path: Path) -> None:
    """A code of a few characters is guessed quickly from a stolen database: SPEC 10 does not
    let us refuse it, so explain (and the milter's log) warns, without printing it."""
    message = tmp_path / "short.eml"
    message.write_text(
        "From: alice@hospital.example\nTo: carol@oldmail.example, dave@oldmail.example\n"
        "zivver-access-right: carol@oldmail.example access-code 4711\n"
        "zivver-access-right: dave@oldmail.example access-code tulip-field-42\n"
        "Subject: x\n\nbody\n"
    )
    args = ("explain", str(message), "--config", str(EXAMPLES / "zivmilter.yaml"))
    text, as_json = run(*args), run(*args, "--json")
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    out = json.loads(as_json.stdout)
    assert out["warnings"] == [
        "zivver-access-right: 'carol@oldmail.example access-code ***': "
        "access code shorter than 6 characters: used, but easy to guess; give a longer one"
    ]
    assert {r["address"]: r["access_right"] for r in out["recipients"]} == {
        "carol@oldmail.example": "access_code",
        "dave@oldmail.example": "access_code",
    }
    assert "  - zivver-access-right: 'carol@oldmail.example access-code ***': access code" in (
        text.stdout
    )
    for secret in ("4711", "tulip-field-42"):
        assert secret not in text.stdout and secret not in as_json.stdout


def test_explain_says_a_message_over_max_message_bytes_is_refused(tmp_path: Path) -> None:
    # What the milter answers (552 5.3.4) before it decides anything: no recipient table. The
    # size is counted as the MTA passes it (CRLF), the file saved with bare LF.
    wire = (EXAMPLES / "secure-message.eml").read_bytes().replace(b"\r\n", b"\n")
    size = len(wire) + wire.count(b"\n")
    msg = tmp_path / "m.eml"
    msg.write_bytes(wire)
    cfg = tmp_path / "small.yaml"
    base = yaml.safe_load((EXAMPLES / "zivmilter.yaml").read_text())
    for limit, refused in ((size, False), (size - 1, True)):
        base["milter"]["max_message_bytes"] = limit
        cfg.write_text(yaml.safe_dump(base))
        out = json.loads(run("explain", str(msg), "--config", str(cfg), "--json").stdout)
        assert ("refused" in out) is refused and ("recipients" in out) is not refused
        if refused:
            reply = f"552 5.3.4 message too big for zivmilter (over {limit} bytes,"
            assert out["refused"]["reply"].startswith(reply)
            assert f"the message is {size} bytes" in out["refused"]["reason"]
            proc = run("explain", str(msg), "--config", str(cfg))
            assert proc.returncode == 0
            assert proc.stdout.startswith(f"Refused: {reply}") and "Why:" not in proc.stdout


def test_explain_says_a_message_nested_too_deep_is_refused(tmp_path: Path) -> None:
    # The milter's 554 5.6.0 before it reads any part; at the limit, the usual decisions.
    head = b"From: alice@hospital.example\r\nTo: carol@oldmail.example\r\nSubject: fw\r\n"
    text = b"Content-Type: text/plain\r\n\r\nthe innermost text\r\n"
    cfg = str(EXAMPLES / "zivmilter.yaml")
    msg = tmp_path / "nested.eml"
    for depth, refused in ((defaults.MIME_NESTING_LIMIT, False), (400, True)):
        msg.write_bytes(nested_message(depth, head, text))
        out = json.loads(run("explain", str(msg), "--config", cfg, "--json").stdout)
        assert ("refused" in out) is refused and ("recipients" in out) is not refused
        proc = run("explain", str(msg), "--config", cfg)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr
        if refused:
            reply = "554 5.6.0 MIME nesting deeper than 100 levels, refused by zivmilter"
            assert out["refused"]["reply"].startswith(reply)
            assert proc.stdout.startswith(f"Refused: {reply}")
