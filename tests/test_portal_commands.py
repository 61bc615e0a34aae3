"""`zivmilter revoke`, `status` and `contacts` on a real store, through the real CLI entry point."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from zivmilter import cli, crypto
from zivmilter.store import NewMessage, NewRecipient, SqliteStore

PHONE = "+31612345678"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, SqliteStore]:
    key = tmp_path / "store.key"
    crypto.keygen(str(key))
    cfg = tmp_path / "zivmilter.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "organization": {"name": "Hospital", "domains": ["hospital.example"]},
                "store": {"path": str(tmp_path / "store"), "key_file": str(key)},
            }
        )
    )
    store = SqliteStore.open(str(tmp_path / "store"), crypto.load_kek(str(key)))
    return cfg, store


def save(store: SqliteStore, msgid: str, recipients: list[NewRecipient]) -> str:
    return store.save_message(
        NewMessage(
            sender="alice@hospital.example",
            subject="s",
            content=b"Subject: s\r\n\r\nbody\r\n",
            recipients=recipients,
            rfc822_id=msgid,
        )
    ).id


def notified(address: str, verification: str = "email", **kw: object) -> NewRecipient:
    return NewRecipient(address, 1, "x", "notification", "A7", verification=verification, **kw)  # type: ignore[arg-type]


def direct(address: str) -> NewRecipient:
    return NewRecipient(address, 1, "transport_security", "direct", "A4", level="pkix")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_shows_method_delivery_notified_opened_failures(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, store = setup
    mid = save(
        store,
        "<st-1@hospital.example>",
        [notified("bob@example.net"), direct("dan@partner.example")],
    )
    (bob, _) = store.recipients(mid)
    store.mark_notified(mid, "bob@example.net")
    attempt = store.claim_attempt(bob.id, lambda streak, lockouts: None, "email")
    store.settle_attempt(attempt, False, "email")
    store.mark_opened(bob.id)
    code, out, _ = run(capsys, "status", "st-1@hospital.example", "--config", str(cfg))
    assert code == 0
    assert f"message {mid}  Message-ID <st-1@hospital.example>  from alice@hospital.example" in out
    bob_block = out.split("bob@example.net")[1].split("dan@partner.example")[0]
    assert "method email" in bob_block and "delivery notification" in bob_block
    assert (
        "failed attempts 1" in bob_block and "opened 20" in bob_block and "notified 20" in bob_block
    )
    dan_block = out.split("dan@partner.example")[1]
    assert "method direct (pkix)" in dan_block and "read when sent" in dan_block
    code, out, _ = run(capsys, "status", "<st-1@hospital.example>", "--json", "--config", str(cfg))
    (report,) = json.loads(out)
    by = {r["recipient"]: r for r in report["recipients"]}
    assert by["bob@example.net"]["failed_attempts"] == 1 and by["bob@example.net"]["opened"]
    assert by["dan@partner.example"]["delivery"] == "direct"
    code, _, err = run(capsys, "status", "<nope@x>", "--config", str(cfg))
    assert code == 1 and "no stored message" in err


def test_revoke_whole_message_destroys_the_key(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, store = setup
    mid = save(
        store,
        "<rv-1@hospital.example>",
        [notified("bob@example.net"), direct("dan@partner.example")],
    )
    code, out, _ = run(capsys, "revoke", "<rv-1@hospital.example>", "--config", str(cfg))
    assert code == 0 and "data key destroyed" in out and "1 direct recipient" in out
    assert store.open_content(mid) is None
    message = store.message(mid)
    assert message is not None and message.revoked_at is not None
    code, out, _ = run(capsys, "revoke", mid, "--config", str(cfg))
    assert code == 1 and "already revoked" in out
    code, out, _ = run(capsys, "status", mid, "--config", str(cfg))
    assert "REVOKED" in out


def test_revoke_drops_an_unsent_reply_on_record(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """A secure reply the MTA did not take yet (left for `maintenance`) dies with the message's
    key: the admin is told, and the audit log says which reply and whose it was."""
    cfg, store = setup
    mid = save(store, "<rv-3@hospital.example>", [notified("bob@example.net")])
    (bob,) = store.recipients(mid)
    sent = store.save_reply(bob.id, b"Subject: Re: s\r\n\r\nsent one\r\n")
    store.mark_reply_sent(sent, "250 ok")
    unsent = store.save_reply(bob.id, b"Subject: Re: s\r\n\r\nunsent one\r\n")
    code, out, _ = run(capsys, "revoke", "<rv-3@hospital.example>", "--config", str(cfg))
    assert code == 0
    assert "1 undelivered secure reply(ies) will not be sent" in out
    (dropped,) = [e for e in store.events(mid) if e.event == "reply-dropped"]
    assert dropped.recipient == "bob@example.net" and dropped.detail.startswith(unsent)
    assert store.unsent_replies(refused=True) == []


def test_revoking_the_last_link_also_says_which_replies_are_dropped(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, store = setup
    mid = save(store, "<rv-4@hospital.example>", [notified("bob@example.net")])
    (bob,) = store.recipients(mid)
    store.save_reply(bob.id, b"Subject: Re: s\r\n\r\nunsent\r\n")
    code, out, _ = run(
        capsys, "revoke", mid, "--recipient", "bob@example.net", "--config", str(cfg)
    )
    assert code == 0 and "data key is destroyed" in out
    assert "1 undelivered secure reply(ies) will not be sent" in out
    assert [e.event for e in store.events(mid)].count("reply-dropped") == 1


def test_revoke_one_recipient_and_direct_ones_cannot(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, store = setup
    mid = save(
        store,
        "<rv-2@hospital.example>",
        [notified("a@example.net"), notified("b@example.net"), direct("dan@partner.example")],
    )
    args = ("revoke", "rv-2@hospital.example", "--config", str(cfg), "--recipient")
    code, out, _ = run(capsys, *args, "A@Example.net")
    assert code == 0 and "revoked for a@example.net" in out
    state = {r.address: store.link_state(r.id) for r in store.recipients(mid)}
    assert state["a@example.net"] is not None and state["a@example.net"].revoked_at is not None
    assert state["b@example.net"] is not None and state["b@example.net"].revoked_at is None
    assert store.open_content(mid) is not None  # b may still read
    code, _, err = run(capsys, *args, "dan@partner.example")
    assert code == 1 and "cannot be revoked" in err
    code, _, err = run(capsys, *args, "nobody@example.net")
    assert code == 1 and "not a recipient" in err
    code, out, _ = run(capsys, *args, "b@example.net")
    assert code == 0 and "data key is destroyed" in out
    assert store.open_content(mid) is None
    only_direct = save(store, "<rv-3@hospital.example>", [direct("dan@partner.example")])
    code, _, err = run(capsys, "revoke", only_direct, "--config", str(cfg))
    assert code == 1 and "cannot be revoked" in err
    assert store.open_content(only_direct) is not None


def test_contacts_list_and_forget(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, store = setup
    store.remember_contact("carol@example.com", sms=PHONE)
    store.remember_contact("dave@example.com", access_code_hash=crypto.hash_secret("tulip"))
    store.remember_language("dave@example.com", "de")  # chosen in the portal (issue 25)
    code, out, _ = run(capsys, "contacts", "list", "--config", str(cfg))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("carol@example.com\tsms +31 6•••••678\taccess code no")
    assert not lines[0].endswith("language de")
    assert lines[1].startswith("dave@example.com\tsms -\taccess code yes")
    assert lines[1].endswith("\tlanguage de")
    assert PHONE not in out and "tulip" not in out
    code, out, _ = run(capsys, "contacts", "forget", "Carol@Example.com", "--config", str(cfg))
    assert code == 0 and store.contact("carol@example.com") is None
    code, _, err = run(capsys, "contacts", "forget", "carol@example.com", "--config", str(cfg))
    assert code == 1 and "not in the contact book" in err
    assert os.path.exists(cfg)


def test_contacts_list_counts_remembered_browsers_and_forget_ends_them(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 25: how many browsers an address has remembered, never their tokens; `forget`
    ends them, with or without a contact-book entry (an emailed code leaves none)."""
    cfg, store = setup
    store.remember_contact("carol@example.com", sms=PHONE)
    later = time.time() + 3600
    for n, address in enumerate(("carol@example.com", "carol@example.com", "erin@example.org")):
        store.remember_device(address, f"{n}" * 64, later)
    code, out, _ = run(capsys, "contacts", "list", "--config", str(cfg))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("carol@example.com\tsms +31 6•••••678\taccess code no")
    assert lines[0].endswith("\tremembered 2 browsers")
    assert lines[1] == (
        "erin@example.org\tsms -\taccess code no\tlast used -\tremembered 1 browser"
    )
    assert "0" * 64 not in out
    code, out, _ = run(capsys, "contacts", "forget", "erin@example.org", "--config", str(cfg))
    assert code == 0 and out == "erin@example.org: 1 browser ended\n"
    code, out, _ = run(capsys, "contacts", "forget", "Carol@Example.com", "--config", str(cfg))
    assert code == 0
    assert out == "Carol@Example.com: forgotten\nCarol@Example.com: 2 browsers ended\n"
    assert store.devices() == {}
    assert not store.use_device("carol@example.com", "0" * 64)
    code, _, err = run(capsys, "contacts", "forget", "erin@example.org", "--config", str(cfg))
    assert code == 1 and "not in the contact book" in err
    events = [(e.event, e.recipient) for e in store.export_events()]
    assert ("devices-ended", "carol@example.com") in events


def test_status_shows_a_lock_only_while_it_lasts(
    setup: tuple[Path, SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, store = setup
    mid = save(store, "<st-2@hospital.example>", [notified("bob@example.net")])
    (bob,) = store.recipients(mid)

    def ten_minutes(streak: int, lockouts: int) -> float:
        return 600.0

    # A wrong answer 605 s ago locked the link for 600 s (a store whose clock is behind).
    kek = crypto.load_kek(str(cfg.parent / "store.key"))
    earlier = SqliteStore.open(str(cfg.parent / "store"), kek, now=lambda: time.time() - 605)
    assert earlier.claim_attempt(bob.id, ten_minutes).locked_until is not None
    earlier.close()
    code, out, _ = run(capsys, "status", "st-2@hospital.example", "--config", str(cfg))
    assert code == 0 and "locked until" not in out
    # A wrong answer now locks it for the next ten minutes.
    assert store.claim_attempt(bob.id, ten_minutes).locked_until is not None
    code, out, _ = run(capsys, "status", "st-2@hospital.example", "--json", "--config", str(cfg))
    assert code == 0 and json.loads(out)[0]["recipients"][0]["locked_until"]
    code, out, _ = run(capsys, "status", "st-2@hospital.example", "--config", str(cfg))
    assert code == 0 and "locked until" in out


def test_portal_workers_find_the_app_through_the_factory_string(
    setup: tuple[Path, SqliteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zivmilter portal --workers N` hands uvicorn a factory string; each worker process
    imports it, reads the configuration named in the environment and serves the portal."""
    import logging
    import warnings

    from uvicorn.importer import import_from_string

    from zivmilter.portal.asgi import ASGI_FACTORY, ENV_CONFIG

    with warnings.catch_warnings():  # Starlette 1.x deprecates its httpx-based client
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    cfg, _ = setup
    monkeypatch.setenv(ENV_CONFIG, str(cfg))
    root = logging.getLogger()  # the factory sets up logging as a worker's own process would
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    app = import_from_string(ASGI_FACTORY)()
    response = TestClient(app).get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")
