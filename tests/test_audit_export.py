"""`zivmilter audit export` (issue 16): the store's audit log as JSON lines, one event per line,
through the real command on a real store; and `logging.format: json` for the daemons' logs.

No secret may leave: not the access code, not the phone number, not a link token, even where
an error text quoted one into an event's detail.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from zivmilter import logsetup
from zivmilter.cli import main
from zivmilter.ops.audit import scrub
from zivmilter.store import NewMessage, NewRecipient, SqliteStore

PHONE = "+31612345678"
CODE = "tulip-secret-42"


@pytest.fixture
def config(tmp_path: Path, store: SqliteStore) -> Path:
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "organization": {"domains": ["hospital.example"]},
                "store": {"path": str(tmp_path / "s"), "key_file": str(tmp_path / "k")},
            }
        )
    )
    return cfg


def export(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, str]]:
    assert main(["audit", "export", "--config", str(config), *extra]) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def history(store: SqliteStore) -> Iterator[tuple[str, str, dict[str, str]]]:
    saved = store.save_message(
        NewMessage(
            sender="alice@hospital.example",
            subject="Lab results",
            content=b"Subject: Lab results\r\n\r\nhello\r\n",
            recipients=[
                NewRecipient(
                    "bob@example.net",
                    1,
                    "sms",
                    "notification",
                    "A5",
                    verification="sms",
                    phone=PHONE,
                ),
                NewRecipient(
                    "carol@example.com",
                    1,
                    "custom_access_right",
                    "notification",
                    "A3",
                    verification="access_code",
                    access_code=CODE,
                    hint="the project",
                ),
            ],
            rfc822_id="<lab-1@hospital.example>",
        )
    )
    other = store.save_message(
        NewMessage(
            sender="alice@hospital.example",
            subject="Other",
            content=b"Subject: Other\r\n\r\nhi\r\n",
            recipients=[
                NewRecipient("dave@example.org", 1, "x", "notification", "A7", verification="email")
            ],
        )
    )
    mid = saved.id
    for address in ("bob@example.net", "carol@example.com"):
        store.mark_notified(mid, address)
    token = saved.tokens["bob@example.net"]
    # what an SMS provider's error text could quote: the number, and a link with its token
    store.record_event(
        "code-send-failed",
        mid,
        "bob@example.net",
        f"sms: provider said 400 for {PHONE} (https://secure.hospital.example/m/{token})",
    )
    carol = next(r for r in store.recipients(mid) if r.address == "carol@example.com")
    store.mark_opened(carol.id)
    store.revoke(other.id, "expired")
    yield mid, other.id, saved.tokens


def test_every_event_as_one_json_line_without_secrets(
    config: Path,
    capsys: pytest.CaptureFixture[str],
    history: tuple[str, str, dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mid, other, tokens = history
    lines = export(config, capsys)
    events = [(e["event"], e["message_id"], e["recipient"]) for e in lines]
    assert ("stored", mid, None) in events
    assert ("notified", mid, "bob@example.net") in events
    assert ("opened", mid, "carol@example.com") in events
    assert ("expired", other, None) in events
    assert ("code-send-failed", mid, "bob@example.net") in events
    for e in lines:
        assert set(e) == {"at", "event", "message_id", "recipient", "detail"}
        assert datetime.fromisoformat(e["at"]).tzinfo is not None
    text = json.dumps(lines)
    assert PHONE not in text and PHONE[1:] not in text and "612345678" not in text
    assert CODE not in text
    for token in tokens.values():
        assert token not in text
    failed = next(e for e in lines if e["event"] == "code-send-failed")
    assert "[redacted]" in failed["detail"] and "+31 6" in failed["detail"]


def test_since_and_message_filters(
    config: Path, capsys: pytest.CaptureFixture[str], history: tuple[str, str, dict[str, str]]
) -> None:
    _, other, _ = history
    only = export(config, capsys, "--message", other)
    assert {e["message_id"] for e in only} == {other}
    assert [e["event"] for e in only][-1] == "expired"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert export(config, capsys, "--since", tomorrow) == []
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert len(export(config, capsys, "--since", yesterday)) == len(export(config, capsys))


def test_a_bad_since_is_one_clear_error(
    config: Path, capsys: pytest.CaptureFixture[str], history: object
) -> None:
    assert main(["audit", "export", "--config", str(config), "--since", "last tuesday"]) == 2
    assert "--since: 'last tuesday' is not a date" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("detail", "kept", "gone"),
    [
        ("sms +31 6•••••678", "+31 6•••••678", ""),
        ("queue 4ZxB1C2d3", "queue 4ZxB1C2d3", ""),
        (
            "0193a7c2f1e04d5b8c9a0b1c2d3e4f5a6b7c8d9e0f",
            "0193a7c2f1e04d5b8c9a0b1c2d3e4f5a6b7c8d9e0f",
            "",
        ),
        ("call +44 20 7946 0958 now", "call", "7946 0958"),
        ("link Zx9_kQ-3mPfV7rT2yWb8nLc4", "[redacted]", "Zx9_kQ-3mPfV7rT2yWb8nLc4"),
        ("600 s", "600 s", ""),
    ],
)
def test_scrub(detail: str, kept: str, gone: str) -> None:
    out = scrub(detail)
    assert kept in out
    assert not gone or gone not in out


def test_json_log_lines() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logsetup.setup("info", stream, fmt="json")
        log = logging.getLogger("zivmilter.milter")
        log.info("done: %s", "stored=1", extra={"queue_id": "4ZxB1", "message_id": "<a@b>"})
        logging.getLogger("zivmilter.portal").info("portal listening")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("tempfail, ref %s", "abcd")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "done: stored=1" and first["level"] == "INFO"
    assert (first["queue_id"], first["message_id"], first["logger"]) == (
        "4ZxB1", "<a@b>", "zivmilter.milter",
    )  # fmt: skip
    assert (second["queue_id"], second["message_id"]) == ("-", "-")
    assert "ValueError: boom" in third["exception"]
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
