"""What is SQLite's own: files at rest and their modes, PRAGMAs and WAL, blob files, upgrades from
older schema versions, group commit."""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.store.common import (
    CODE,
    HINT,
    MARK_BODY,
    MARK_SUBJECT,
    PHONE,
    Clock,
    _committed,
    _lock_after_five,
    _queued,
    inline,
    new_message,
    raw_message,
    recipients,
    store_files,
    stored_blobs,
)
from zivmilter import crypto, defaults, store
from zivmilter.core.facts import Contact
from zivmilter.errors import StoreError
from zivmilter.store import NewRecipient, SqliteStore
from zivmilter.store.sqlite.connection import _Pending
from zivmilter.store.sqlite.contents import insert_blob


@pytest.mark.parametrize("kind", ["bytes", "file", "path"])
def test_content_sources(st: SqliteStore, tmp_path: Path, kind: str) -> None:
    raw = raw_message(extra=os.urandom(3 * crypto.RECORD_SIZE + 5))
    src: object = raw
    if kind == "file":
        src = io.BytesIO(raw)
    elif kind == "path":
        p = tmp_path / "spool.eml"
        p.write_bytes(raw)
        src = str(p)
    saved = st.save_message(new_message(src))
    content = st.open_content(saved.id)
    assert content is not None
    assert content.read() == raw


def test_no_plaintext_in_any_store_file(st: SqliteStore, tmp_path: Path) -> None:
    saved = st.save_message(new_message())
    st.record_event("opened", saved.id, "bob@example.net")
    files = store_files(tmp_path / "store")
    assert any(name.endswith(".zmb") for name in files) != inline(st)
    assert any(name.endswith("store.sqlite3") for name in files)
    assert len(stored_blobs(tmp_path / "store")) == 1
    secrets_in_clear = [MARK_BODY, MARK_SUBJECT, PHONE, PHONE[3:], CODE, HINT[:10], "Dear Bob"]
    secrets_in_clear += list(saved.tokens.values())
    for name, data in files.items():
        for secret in secrets_in_clear:
            assert secret.encode() not in data, f"{secret!r} in clear in {name}"
            assert secret.encode("utf-16-le") not in data


def test_file_modes_are_private(st: SqliteStore, tmp_path: Path) -> None:
    st.save_message(new_message())
    root = tmp_path / "store"
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} has mode {mode:o}"


def test_wrong_kek_fails_with_store_error(tmp_path: Path, kek: bytes) -> None:
    path = str(tmp_path / "store")
    s = SqliteStore.open(path, kek)
    saved = s.save_message(new_message())
    s.close()
    with pytest.raises(StoreError, match="wrong key-encryption key"):
        SqliteStore.open(path, os.urandom(32))
    again = SqliteStore.open(path, kek)
    content = again.open_content(saved.id)
    assert content is not None and content.read() == raw_message()
    again.close()


def test_wrong_kek_never_yields_garbage_on_read(tmp_path: Path, kek: bytes) -> None:
    # An empty store accepts any key at open; reading another key's message must still fail.
    path = str(tmp_path / "store")
    a = SqliteStore.open(path, kek)
    b = SqliteStore.open(path, os.urandom(32))
    saved = a.save_message(new_message())
    with pytest.raises(StoreError):
        b.open_content(saved.id)
    with pytest.raises(StoreError):
        b.message(saved.id)
    a.close()
    b.close()


def test_damaged_blob_fails_with_store_error(st: SqliteStore, tmp_path: Path) -> None:
    saved = st.save_message(new_message())
    ((where, blob),) = stored_blobs(tmp_path / "store")
    data = bytearray(blob)
    data[40] ^= 0x80
    if inline(st):
        st._conn.execute("UPDATE blobs SET data = ?", (bytes(data),))
    else:
        Path(where).write_bytes(bytes(data))
    content = st.open_content(saved.id)
    assert content is not None
    with pytest.raises(StoreError):
        content.read()


def test_revoked_content_cannot_be_opened(st: SqliteStore, tmp_path: Path) -> None:
    saved = st.save_message(new_message())
    token = saved.tokens["bob@example.net"]
    assert st.revoke(saved.id, "sender withdrew it")
    assert st.open_content(saved.id) is None
    assert not st.revoke(saved.id)
    assert stored_blobs(tmp_path / "store") == []
    rec = st.find_recipient_by_token(token)
    assert rec is not None
    assert rec.message.revoked_at is not None
    assert rec.message.subject is None and rec.phone is None
    assert not rec.message.available(datetime.now(UTC))
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert db.execute("SELECT wrapped_key FROM messages").fetchall() == [(None,)]
    db.close()
    assert [e.event for e in st.events(saved.id)] == ["stored", "revoked"]


def test_revocation_keeps_direct_attachments_and_drops_the_rest(
    st: SqliteStore, tmp_path: Path
) -> None:
    """Revoking ends the notification links; the direct copy's large attachment (own key)
    stays readable, everything sealed under the message's key goes."""
    saved = st.save_message(new_message())
    kept = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"ATTACHMENT" * 1000)
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None
    reply = st.save_reply(rec.id, b"Subject: Re\r\n\r\nREPLY\r\n")
    st.save_portal_view(saved.id, b"VIEW")
    assert st.revoke(saved.id)
    assert st.open_content(saved.id) is None and st.open_reply(reply) is None
    assert st.portal_view(saved.id) is None
    att = st.attachment(kept.id)
    assert att is not None and att.available and att.filename == "scan.pdf"
    stream = st.open_attachment(kept.id)
    assert stream is not None and stream.read() == b"ATTACHMENT" * 1000
    assert len(stored_blobs(tmp_path / "store")) == 1  # the attachment's ciphertext
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert db.execute("SELECT portal_view FROM messages").fetchall() == [(None,)]
    assert db.execute("SELECT kind FROM blobs WHERE deleted_at IS NULL").fetchall() == [
        ("attachment",)
    ]
    db.close()


def test_discard_forgets_everything(st: SqliteStore, tmp_path: Path) -> None:
    saved = st.save_message(new_message())
    st.discard(saved.id)
    assert st.message(saved.id) is None
    assert st.find_recipient_by_token(saved.tokens["bob@example.net"]) is None
    assert stored_blobs(tmp_path / "store") == []


def test_notified_and_opened_are_recorded(st: SqliteStore) -> None:
    saved = st.save_message(new_message())
    st.mark_notified(saved.id, "bob@example.net")
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None and rec.notified_at is not None and rec.opened_at is None
    st.mark_opened(rec.id)
    st.mark_opened(rec.id)
    # opens commit without an fsync of their own; everything else stays synchronous=FULL
    assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    rec2 = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec2 is not None and rec2.opened_at is not None
    events = [(e.event, e.recipient) for e in st.events(saved.id)]
    assert events == [
        ("stored", None),
        ("notified", "bob@example.net"),
        ("opened", "bob@example.net"),
        ("opened", "bob@example.net"),
    ]


def test_save_is_durable_before_it_returns(
    st: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        calls.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    saved = st.save_message(new_message())
    monkeypatch.undo()

    if inline(st):  # the ciphertext is in the row: nothing of its own to fsync
        assert calls == []
        _committed(tmp_path, [saved.id])
        return
    (blob,) = (tmp_path / "store" / "blobs").rglob("*.zmb")
    tmp_name = f"{blob.parent}/.{blob.stem}.tmp"
    kinds = [(k, v) for k, v in calls]
    # The temp file is fsynced, then renamed onto its final name, then its folder is fsynced.
    i_file = kinds.index(("fsync", tmp_name))
    i_rename = kinds.index(("replace", f"{tmp_name} -> {blob}"))
    i_dir = kinds.index(("fsync", str(blob.parent)))
    assert i_file < i_rename < i_dir
    _committed(tmp_path, [saved.id])


def test_database_settings(st: SqliteStore, tmp_path: Path) -> None:
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(store.SCHEMA_VERSION,)]
    db.close()
    assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_failed_insert_leaves_no_blob(
    st: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object) -> bytes:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(crypto, "wrap_data_key", boom)
    with pytest.raises(RuntimeError):
        st.save_message(new_message())
    assert stored_blobs(tmp_path / "store") == []
    assert list((tmp_path / "store" / "blobs").rglob("*.tmp")) == []
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    db.close()


def test_reopen_keeps_data(tmp_path: Path, kek: bytes) -> None:
    path = str(tmp_path / "store")
    a = SqliteStore.open(path, kek)
    saved = a.save_message(new_message())
    a.close()
    b = SqliteStore.open(path, kek)
    assert b.find_recipient_by_token(saved.tokens["dave@example.net"]) is not None
    b.close()


def test_orphan_blobs_are_swept(st: SqliteStore, tmp_path: Path, clock: Clock) -> None:
    saved = st.save_message(new_message())
    orphan = tmp_path / "store" / "blobs" / "ab" / "abcd.zmb"
    orphan.parent.mkdir()
    orphan.write_bytes(b"ZMB1...")
    os.utime(orphan, (clock.t - 7200, clock.t - 7200))
    assert st.sweep_orphans() == 1
    assert not orphan.exists()
    assert st.open_content(saved.id) is not None


def test_answers_in_flight_at_once_cannot_pass_the_lockout(
    tmp_path: Path, kek: bytes, clock: Clock
) -> None:
    """Sixteen wrong answers at once, from two portal processes (two store objects on one
    database): only as many are compared as the lockout allows, the rest are refused."""
    stores = [SqliteStore.open(str(tmp_path / "store"), kek, now=clock) for _ in range(2)]
    saved = stores[0].save_message(new_message(recipients=recipients()[:1]))
    (rec,) = [r for r in stores[0].recipients(saved.id) if r.delivery == "notification"]
    n = 16
    barrier = threading.Barrier(n)
    admitted: list[bool] = []
    errors: list[BaseException] = []

    def answer(i: int) -> None:
        st = stores[i % 2]
        try:
            barrier.wait()
            attempt = st.claim_attempt(rec.id, _lock_after_five, "access_code")
            admitted.append(attempt.admitted)
            if attempt.admitted:
                time.sleep(0.05)  # comparing (scrypt, argon2) takes about this long
                st.settle_attempt(attempt, False, "access_code")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert admitted.count(True) == defaults.LOCKOUT_AFTER
    events = [e.event for e in stores[0].events(saved.id)]
    assert events.count("verify-failed") == defaults.LOCKOUT_AFTER
    assert events.count("locked") == 1
    assert events.count("verify-while-locked") == n - defaults.LOCKOUT_AFTER
    after = stores[1].recipient(rec.id)
    assert after is not None and after.failed_attempts == defaults.LOCKOUT_AFTER
    assert after.locked_until is not None and after.locked_until.timestamp() == clock.t + 60
    assert not stores[0].claim_attempt(rec.id, _lock_after_five).admitted  # the right code too
    for st in stores:
        st.close()


def test_contact_book_feeds_remembered_methods(st: SqliteStore, tmp_path: Path) -> None:
    assert st.contact("bob@example.net") is None
    st.remember_contact("Bob@example.net", sms=PHONE)
    st.remember_contact("bob@example.net", access_code_hash=crypto.hash_secret(CODE))
    assert st.contact("bob@example.net") == Contact(sms=PHONE, access_code=True)
    # Rules 5/6: no number or code in the directive, the contact book supplies it.
    msg = new_message(
        recipients=[
            NewRecipient("bob@example.net", 1, "sms", "notification", "A5", verification="sms"),
        ]
    )
    saved = st.save_message(msg)
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None and rec.phone == PHONE
    msg2 = new_message(
        recipients=[
            NewRecipient(
                "bob@example.net",
                1,
                "access_code",
                "notification",
                "A6",
                verification="access_code",
            ),
        ]
    )
    saved2 = st.save_message(msg2)
    rec2 = st.find_recipient_by_token(saved2.tokens["bob@example.net"])
    assert rec2 is not None and rec2.access_code_hash is not None
    assert crypto.verify_secret(rec2.access_code_hash, CODE)
    for data in store_files(tmp_path / "store").values():
        assert PHONE.encode() not in data


def test_contents_above_the_inline_limit_get_a_file(tmp_path: Path, kek: bytes) -> None:
    s = SqliteStore.open(str(tmp_path / "store"), kek, inline_max=1000)
    small = raw_message(extra=b"x" * (1000 - len(raw_message())))
    large = raw_message(extra=b"y" * 5000)
    assert len(small) == 1000
    a = s.save_message(new_message(small))
    b = s.save_message(new_message(io.BytesIO(large)))
    kinds = sorted(where.startswith("row") for where, _ in stored_blobs(tmp_path / "store"))
    assert kinds == [False, True]  # one file, one row
    for saved, content in ((a, small), (b, large)):
        stream = s.open_content(saved.id)
        assert stream is not None and stream.read() == content
    s.close()


def test_a_store_of_files_is_read_after_the_upgrade(tmp_path: Path, kek: bytes) -> None:
    # Stores written before contents moved into the rows (schema 4) keep their files readable.
    path = str(tmp_path / "store")
    old = SqliteStore.open(path, kek, inline_max=0)
    first = old.save_message(new_message())
    old._conn.execute("UPDATE schema_version SET version = 4")
    old._conn.execute("ALTER TABLE blobs DROP COLUMN data")
    old._conn.execute("ALTER TABLE attachments DROP COLUMN wrapped_key")  # schema 6
    old._conn.execute("ALTER TABLE replies DROP COLUMN refused_at")  # schema 7
    old._conn.execute("DROP TABLE handed_copies")  # schema 8
    old._conn.execute("DROP TABLE handovers")
    old.close()
    new = SqliteStore.open(path, kek)
    second = new.save_message(new_message())
    for saved in (first, second):
        stream = new.open_content(saved.id)
        assert stream is not None and stream.read() == raw_message()
    assert [w.startswith("row") for w, _ in stored_blobs(tmp_path / "store")] == [False, True]
    new.close()


def test_attachments_of_an_older_store_end_with_their_message_after_the_upgrade(
    tmp_path: Path, kek: bytes
) -> None:
    # Before schema 6 a large attachment was sealed under its message's data key: it stays
    # readable until the message is revoked, and then it is not (no copy of the key survives).
    path = str(tmp_path / "store")
    old = SqliteStore.open(path, kek)
    saved = old.save_message(new_message())
    (wrapped,) = old._conn.execute(
        "SELECT wrapped_key FROM messages WHERE id = ?", (saved.id,)
    ).fetchone()
    data_key = old._sealing.data_key(bytes(wrapped))
    aid, blob_id = "a" * 32, "b" * 32
    blob = old._write_blob(blob_id, data_key, b"LEGACY-ATTACHMENT")
    field_key = crypto.message_field_key(data_key.raw)
    name = crypto.seal(field_key, b"old.pdf", "attachments.filename:" + aid)
    with old._transaction() as cur:
        insert_blob(cur, blob, blob_id, saved.id, "attachment")
        cur.execute(
            "INSERT INTO attachments (id, message_id, blob_id, filename, content_type,"
            " token_hash, created_at) VALUES (?, ?, ?, ?, 'application/pdf', ?, 0)",
            (aid, saved.id, blob_id, name, crypto.token_hash("t" * 32)),
        )
    old._conn.execute("ALTER TABLE attachments DROP COLUMN wrapped_key")
    old._conn.execute("ALTER TABLE replies DROP COLUMN refused_at")
    old._conn.execute("DROP TABLE handed_copies")  # schema 8
    old._conn.execute("DROP TABLE handovers")
    old._conn.execute("UPDATE schema_version SET version = 5")
    old.close()
    new = SqliteStore.open(path, kek)
    stream = new.open_attachment(aid)
    assert stream is not None and stream.read() == b"LEGACY-ATTACHMENT"
    assert new.revoke(saved.id)
    assert new.open_content(saved.id) is None
    assert new.open_attachment(aid) is None
    keys = new._conn.execute(
        "SELECT a.wrapped_key, m.wrapped_key FROM attachments a JOIN messages m"
        " ON m.id = a.message_id WHERE a.id = ?",
        (aid,),
    ).fetchone()
    assert keys == (None, None), "no copy of the revoked message's key may survive"
    new.close()


def test_concurrent_saves_share_one_commit(
    st: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    real = st._write_batch

    def counted(batch: list[_Pending]) -> None:
        batches.append(len(batch))
        real(batch)

    monkeypatch.setattr(st, "_write_batch", counted)
    quick = [r for r in recipients() if r.verification != "access_code"]
    saved: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: saved.append(st.save_message(new_message(recipients=quick)).id)
        )
        for _ in range(6)
    ]
    with st._lock:  # a commit under way: the six queue up behind it
        for t in threads:
            t.start()
        _queued(st, 6)
    for t in threads:
        t.join()
    assert batches == [6]
    assert len(saved) == 6
    _committed(tmp_path, saved)
    for message_id in saved:
        stream = st.open_content(message_id)
        assert stream is not None and stream.read() == raw_message()


def test_a_failing_save_fails_alone_in_its_batch(st: SqliteStore, tmp_path: Path) -> None:
    def event(name: str) -> Callable[[sqlite3.Cursor], None]:
        def write(cur: sqlite3.Cursor) -> None:
            cur.execute("INSERT INTO audit (at, event) VALUES (1, ?)", (name,))
            if name == "bad":
                cur.execute("INSERT INTO no_such_table VALUES (1)")

        return write

    errors: dict[str, BaseException | None] = {}

    def run(name: str) -> None:
        try:
            st._commit_grouped(event(name))
            errors[name] = None
        except BaseException as exc:
            errors[name] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "bad", "c")]
    with st._lock:
        for t in threads:
            t.start()
            _queued(st, threads.index(t) + 1)  # in this order
    for t in threads:
        t.join()
    assert errors["a"] is None and errors["c"] is None
    assert isinstance(errors["bad"], sqlite3.OperationalError)
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert [r[0] for r in db.execute("SELECT event FROM audit ORDER BY id")] == ["a", "c"]
    db.close()
