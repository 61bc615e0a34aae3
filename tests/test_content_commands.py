"""Content rules as an admin meets them: `zivmilter scan` and `explain` (real files; `cli.main`
in this process, which shows the exit status and output of `python -m zivmilter` for a command
that does its job and exits), and the milter's log line (pymilter's TestCtx driving the real
adapter and gateway)."""

from __future__ import annotations

import json
from pathlib import Path

import Milter
import pytest
import yaml
from Milter import testctx

from tests.fakes import make_config
from tests.harness.cli import zivmilter_in_process as zivmilter
from tests.harness.messages import nested_message
from tests.test_milter_adapter import run, use_gateway
from zivmilter.core.facts import facts_from_mapping
from zivmilter.store import SqliteStore

LETTER = (
    b"From: Dr. Alice <alice@hospital.example>\r\nTo: bob@partner.example\r\n"
    b"Subject: Uitslag onderzoek\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Geachte collega,\r\n\r\nBetreft: mevrouw J. de Vries, BSN 1234.56.782.\r\n"
    b"Rekening NL91 ABNA 0417 1643 00. Bel gerust: 020-5551234.\r\n"
)
SELECTION = {
    "mode": "rules",
    "content": {
        "bsn": True,
        "iban": True,
        "payment_card": True,
        "patterns": {"patient_number": r"PAT-\d{7}"},
    },
}


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    cfg = tmp_path / "zivmilter.yaml"
    data = {"organization": {"domains": ["hospital.example"]}, "selection": SELECTION}
    cfg.write_text(yaml.safe_dump(data))
    message = tmp_path / "letter.eml"
    message.write_bytes(LETTER)
    return str(cfg), str(message)


def test_scan_prints_masked_matches(files: tuple[str, str]) -> None:
    cfg, message = files
    proc = zivmilter("scan", message, "--config", cfg)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "bsn in text/plain: ****.**.782",
        "iban in text/plain: **** **** **** ***3 00",
    ]
    proc = zivmilter("scan", message, "--config", cfg, "--json")
    assert json.loads(proc.stdout) == {
        "matches": [
            {"rule": "bsn", "where": "text/plain", "masked": "****.**.782"},
            {"rule": "iban", "where": "text/plain", "masked": "**** **** **** ***3 00"},
        ]
    }


def test_scan_without_a_match_exits_1(files: tuple[str, str], tmp_path: Path) -> None:
    cfg, _ = files
    clean = tmp_path / "clean.eml"
    clean.write_bytes(LETTER.replace(b"1234.56.782", b"onbekend").replace(b"NL91", b"XX91"))
    proc = zivmilter("scan", str(clean), "--config", cfg)
    assert (proc.returncode, proc.stdout) == (1, "no content rule matched\n")


def test_scan_without_rules_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "plain.yaml"
    cfg.write_text("organization: {domains: [hospital.example]}\n")
    (tmp_path / "m.eml").write_bytes(LETTER)
    proc = zivmilter("scan", str(tmp_path / "m.eml"), "--config", str(cfg))
    assert proc.returncode == 2
    assert "no content rule is on (selection.content" in proc.stderr


def test_scan_of_a_message_nested_too_deep_says_the_milters_refusal(
    files: tuple[str, str], tmp_path: Path
) -> None:
    # The milter refuses such a message before reading it, and scan says so in one line (at
    # 2000 levels the email package's parser raised RecursionError: a traceback).
    cfg, _ = files
    deep = tmp_path / "deep.eml"
    head = b"From: alice@hospital.example\r\nTo: bob@partner.example\r\nSubject: fw\r\n"
    deep.write_bytes(nested_message(2000, head, b"Content-Type: text/plain\r\n\r\nBSN\r\n"))
    proc = zivmilter("scan", str(deep), "--config", cfg)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith(
        f"{deep}: 554 5.6.0 MIME nesting deeper than 100 levels, refused by zivmilter (its"
        " limit, as Postfix's mime_nesting_limit)"
    )
    assert len(proc.stderr.strip().splitlines()) == 1


def test_explain_json_and_text(files: tuple[str, str]) -> None:
    cfg, message = files
    proc = zivmilter("explain", message, "--config", cfg, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["selected"] is True
    assert out["selection_matches"][0] == {
        "rule": "bsn",
        "where": "text/plain",
        "masked": "****.**.782",
    }
    text = zivmilter("explain", message, "--config", cfg).stdout
    assert "    bsn in text/plain: ****.**.782" in text
    for shown in (proc.stdout, text):
        assert "1234.56.782" not in shown and "0417 1643" not in shown


def test_milter_logs_the_masked_match(store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config({"submission": {"any_address_of_own_domains": True}, "selection": SELECTION})
    sent = use_gateway(store, cfg, facts_from_mapping({}))
    caplog.set_level("INFO", logger="zivmilter")
    ctx = testctx.TestCtx()
    assert run(ctx, ["bob@partner.example"], LETTER) in (Milter.ACCEPT, Milter.DISCARD)
    assert "content rule bsn matched in text/plain: ****.**.782" in caplog.text
    assert "content rule iban matched in text/plain: **** **** **** ***3 00" in caplog.text
    assert "1234.56.782" not in caplog.text and "0417 1643" not in caplog.text
    # secured: bob gets a notification in this transaction; the letter itself does not go out
    assert ctx._bodyreplaced and not sent.sent
    assert b"1234.56.782" not in ctx._body.getvalue()


def test_milter_passes_the_letter_without_a_bsn(store: SqliteStore) -> None:
    cfg = make_config({"submission": {"any_address_of_own_domains": True}, "selection": SELECTION})
    sent = use_gateway(store, cfg, facts_from_mapping({}))
    clean = LETTER.replace(b"BSN 1234.56.782", b"geboren 12-03-1980").replace(b"NL91", b"XX91")
    ctx = testctx.TestCtx()
    assert run(ctx, ["bob@partner.example"], clean) == Milter.ACCEPT
    assert not ctx._bodyreplaced and not sent.sent and not ctx._delrcpt
