"""`zivmilter maintenance`: expiry, orphan blobs, and replies the MTA did not take (resent)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness.cli import zivmilter_in_process
from tests.harness.postfix import free_port
from tests.harness.sink import Sink
from zivmilter import cli, crypto, defaults
from zivmilter.cli import maintenance as maintenance_cmd
from zivmilter.portal import verify
from zivmilter.store import NewMessage, NewRecipient, SqliteStore

ROOT = Path(__file__).parent.parent


def maintenance(cfg: Path) -> subprocess.CompletedProcess[str]:
    return zivmilter_in_process("maintenance", "--config", str(cfg))


@dataclass
class _Site:
    cfg: Path  # the config file
    port: int  # where the replies' listener is expected (nothing listens on reinject.port)
    open_store: Callable[..., SqliteStore]  # (ago=seconds): a store whose clock runs behind
    rcpt: NewRecipient  # bob@partner.example, verified by email


def _site(tmp_path: Path) -> _Site:
    key, store_dir, port = tmp_path / "store.key", tmp_path / "store", free_port()
    crypto.keygen(str(key))
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "organization: {domains: [hospital.example]}\n"
        f"store: {{path: {store_dir}, key_file: {key}}}\n"
        f"reinject: {{host: 127.0.0.1, port: {free_port()}, replies_port: {port}, timeout: 5}}\n"
    )
    rcpt = NewRecipient(
        "bob@partner.example", 1, "email_verification", "notification", "A7", verification="email"
    )

    def open_store(ago: float = 0.0) -> SqliteStore:
        """The site's store; with `ago`, one whose clock is that many seconds behind (what it
        writes was written then): tests travel in time through the store's clock."""
        return SqliteStore.open(
            str(store_dir), crypto.load_kek(str(key)), now=lambda: time.time() - ago
        )

    return _Site(cfg, port, open_store, rcpt)


def test_maintenance(tmp_path: Path) -> None:
    site = _site(tmp_path)
    cfg, port, rcpt, store = site.cfg, site.port, site.rcpt, site.open_store()
    kept = store.save_message(
        NewMessage("alice@hospital.example", "s", b"Subject: s\r\n\r\nx\r\n", [rcpt])
    )
    store.save_message(
        NewMessage(
            "alice@hospital.example",
            "old",
            b"Subject: old\r\n\r\ny\r\n",
            [rcpt],
            expires_at=datetime.now(UTC) - timedelta(minutes=1),
        )
    )
    recipient = store.find_recipient_by_token(kept.tokens["bob@partner.example"])
    assert recipient is not None
    reply = b"From: bob@partner.example\r\nSubject: Re: s\r\n\r\nthanks\r\n"
    # Its hand-over failed an hour ago. A reply written just now may be on its way through the
    # portal at this very moment: maintenance must leave it alone (no second copy).
    with contextlib.closing(site.open_store(ago=3600)) as an_hour_ago:
        an_hour_ago.save_reply(recipient.id, reply)
    store.save_reply(recipient.id, b"From: bob@partner.example\r\nSubject: Re: s\r\n\r\nnew\r\n")
    store.close()
    orphan = tmp_path / "store" / "blobs" / "zz" / "deadbeef.zmb"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"ciphertext nobody refers to")
    old = time.time() - 7200
    os.utime(orphan, (old, old))

    first = maintenance(cfg)  # nothing listens for re-injection yet
    assert first.returncode == 1, first.stderr
    assert "expired messages revoked: 1; orphan blobs removed: 1" in first.stdout
    assert "replies handed to the MTA: 0; still failing: 1" in first.stdout
    assert not orphan.exists()

    with Sink("127.0.0.1", port) as mta:
        second = maintenance(cfg)
        assert second.returncode == 0, second.stderr
        assert "replies handed to the MTA: 1; still failing: 0" in second.stdout
        (got,) = mta.wait_for(1)
        assert got.rcpt_tos == ("alice@hospital.example",)
        assert got.mail_from == "noreply@hospital.example"
        assert got.data.rstrip(b"\r\n") == reply.rstrip(b"\r\n")
        third = maintenance(cfg)
        assert "replies handed to the MTA: 0; still failing: 0" in third.stdout
        assert len(mta.received) == 1


def _four_wrong_sign_ins(store: SqliteStore, address: str) -> None:
    for _ in range(defaults.LOCKOUT_AFTER - 1):
        store.settle_sign_in(store.claim_sign_in(address, verify.lockout_seconds), False)


def test_maintenance_forgets_the_sign_in_counts_of_addresses_without_an_account(
    tmp_path: Path,
) -> None:
    """A week after their last wrong sign-in (and no lock in force), and not before; an
    account's own streak is no such count and stays."""
    site = _site(tmp_path)
    week = defaults.SIGN_IN_COUNT_KEEP_SECONDS
    with contextlib.closing(site.open_store(ago=week + 60)) as then:
        then.add_account("alice@hospital.example", "sender")
        for address in ("old.probe@hospital.example", "alice@hospital.example"):
            _four_wrong_sign_ins(then, address)
    with contextlib.closing(site.open_store(ago=week - 60)) as later:
        _four_wrong_sign_ins(later, "recent.probe@hospital.example")
    maintenance(site.cfg)
    with contextlib.closing(site.open_store()) as store:
        fifth = {
            address: store.claim_sign_in(address, verify.lockout_seconds).locked_until
            for address in (
                "old.probe@hospital.example",
                "recent.probe@hospital.example",
                "alice@hospital.example",
            )
        }
    assert fifth["old.probe@hospital.example"] is None  # forgotten: a fifth starts afresh
    assert fifth["recent.probe@hospital.example"] is not None  # kept: the fifth locks
    assert fifth["alice@hospital.example"] is not None


def test_a_run_while_another_holds_the_housekeeping_lock_does_nothing(tmp_path: Path) -> None:
    """Two runs at once (the timer on two nodes): the second sees the lock taken, says so and
    hands nothing over, so the MTA never gets a reply twice; the next run does the work."""
    site = _site(tmp_path)
    with contextlib.closing(site.open_store(ago=3600)) as store:
        saved = store.save_message(
            NewMessage("alice@hospital.example", "s", b"Subject: s\r\n\r\nx\r\n", [site.rcpt])
        )
        recipient = store.find_recipient_by_token(saved.tokens["bob@partner.example"])
        assert recipient is not None
        store.save_reply(recipient.id, b"Subject: Re: s\r\n\r\nthanks\r\n")
    with Sink("127.0.0.1", site.port) as mta:
        with contextlib.closing(site.open_store()) as other, other.housekeeping_lock() as held:
            assert held
            second = maintenance(site.cfg)
        assert second.returncode == 0, second.stderr
        assert "another maintenance run holds the housekeeping lock" in second.stdout
        assert mta.received == []
        after = maintenance(site.cfg)
        assert "replies handed to the MTA: 1" in after.stdout
        assert len(mta.wait_for(1)) == 1


def test_a_reply_the_mta_refuses_for_good_is_reported_once(tmp_path: Path) -> None:
    """A 5xx is final: retrying the same reply every hour cannot help and would keep the
    maintenance timer failing forever. It is reported once, recorded, and left alone."""
    site = _site(tmp_path)
    cfg, port, rcpt, store = site.cfg, site.port, site.rcpt, site.open_store()
    saved = store.save_message(
        NewMessage("alice@hospital.example", "s", b"Subject: s\r\n\r\nx\r\n", [rcpt])
    )
    recipient = store.find_recipient_by_token(saved.tokens["bob@partner.example"])
    assert recipient is not None
    store.close()
    with contextlib.closing(site.open_store(ago=3600)) as an_hour_ago:
        reply_id = an_hour_ago.save_reply(recipient.id, b"Subject: Re: s\r\n\r\nthanks\r\n")

    refusal = "550 5.1.1 <alice@hospital.example>: Recipient address rejected: User unknown"
    with Sink("127.0.0.1", port, refuse_rcpt=refusal) as mta:
        first = maintenance(cfg)
        assert first.returncode == 1, first.stderr
        assert "still failing: 0; refused for good: 1" in first.stdout
        assert f"reply {reply_id} to alice@hospital.example refused for good" in first.stdout
        assert "550 5.1.1" in first.stdout
        second = maintenance(cfg)
        assert second.returncode == 0, second.stderr
        assert "replies handed to the MTA: 0; still failing: 0; refused for good: 0" in (
            second.stdout
        )
        assert mta.received == []
    store = site.open_store()
    (reply,) = store.replies(recipient.id)
    assert reply.sent_at is None and reply.refused_at is not None
    (event,) = [e for e in store.events(saved.id) if e.event == "reply-undeliverable"]
    assert "550 5.1.1" in event.detail
    store.close()

    # The cause mended (here: the MTA takes it now), the admin asks for another try.
    with Sink("127.0.0.1", port) as mta:
        assert "refused for good: 0" in maintenance(cfg).stdout and mta.received == []
        again = zivmilter_in_process("maintenance", "--config", str(cfg), "--retry-refused")
        assert again.returncode == 0, again.stderr
        assert "replies handed to the MTA: 1; still failing: 0; refused for good: 0" in (
            again.stdout
        )
        (got,) = mta.wait_for(1)
        assert got.rcpt_tos == ("alice@hospital.example",) and b"thanks" in got.data
    store = site.open_store()
    (reply,) = store.replies(recipient.id)
    assert reply.sent_at is not None
    store.close()


def _expired_with_an_unsent_reply(site: _Site) -> str:
    """A message whose reply's hand-over failed an hour ago, and which has expired since."""
    store = site.open_store(ago=3600)  # written an hour ago, expired a minute ago
    saved = store.save_message(
        NewMessage(
            "alice@hospital.example",
            "s",
            b"Subject: s\r\n\r\nx\r\n",
            [site.rcpt],
            expires_at=datetime.now(UTC) - timedelta(minutes=1),
        )
    )
    recipient = store.find_recipient_by_token(saved.tokens["bob@partner.example"])
    assert recipient is not None
    store.save_reply(recipient.id, b"Subject: Re: s\r\n\r\nlast words\r\n")
    store.close()
    return saved.id


def test_a_reply_is_sent_before_its_message_expires(tmp_path: Path) -> None:
    """Maintenance resends first and expires after: a reply written (and left for maintenance)
    while its message was still open is not lost to the same run's expiry."""
    site = _site(tmp_path)
    cfg, message_id = site.cfg, _expired_with_an_unsent_reply(site)
    with Sink("127.0.0.1", site.port) as mta:
        run = maintenance(cfg)
        assert run.returncode == 0, run.stderr
        assert "expired messages revoked: 1" in run.stdout
        assert "replies handed to the MTA: 1" in run.stdout
        (got,) = mta.wait_for(1)
        assert b"last words" in got.data
    store = site.open_store()
    assert [e.event for e in store.events(message_id) if e.event.startswith("reply-")] == [
        "reply-stored",
        "reply-sent",
    ]
    store.close()


def test_an_expired_message_waits_for_its_unsent_reply_then_drops_it_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The MTA is down when maintenance runs: the expired message keeps its key (not its
    readers: expiry is checked on every read) while its reply may still go out; after the grace
    period it is revoked, and the audit log says the reply was dropped."""
    site = _site(tmp_path)
    cfg, message_id = site.cfg, _expired_with_an_unsent_reply(site)

    first = maintenance(cfg)  # nothing listens for re-injection
    assert "replies handed to the MTA: 0; still failing: 1" in first.stdout
    assert "expired messages revoked: 0" in first.stdout

    # The grace period later: the same command in-process, its store's clock that far ahead.
    grace = defaults.UNSENT_REPLY_GRACE
    monkeypatch.setattr(maintenance_cmd, "open_store", lambda _cfg: site.open_store(ago=-grace))
    cli.main(["maintenance", "--config", str(cfg)])
    assert "expired messages revoked: 1" in capsys.readouterr().out
    store = site.open_store()
    (dropped,) = [e for e in store.events(message_id) if e.event == "reply-dropped"]
    assert dropped.recipient == "bob@partner.example"
    assert store.unsent_replies(refused=True) == []
    store.close()
