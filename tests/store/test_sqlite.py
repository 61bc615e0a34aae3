"""What is SQLite's own: files at rest and their modes, PRAGMAs and WAL, blob files, upgrades from
older schema versions, group commit."""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.store.common import (
    CODE,
    HINT,
    MARK_BODY,
    MARK_SUBJECT,
    PHONE,
    Clock,
    _committed,
    _queued,
    inline,
    new_message,
    raw_message,
    recipients,
    store_files,
    stored_blobs,
)
from zivmilter import cli, crypto, defaults, store
from zivmilter.errors import StoreError
from zivmilter.store import NewPart, NewRecipient, SqliteStore
from zivmilter.store.sqlite.connection import _Pending
from zivmilter.store.sqlite.contents import insert_blob


@pytest.fixture
def st(sqlite_st: SqliteStore) -> SqliteStore:
    """These checks are SQLite's own: they run on its variants, not over every backend."""
    return sqlite_st


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


def test_revocation_leaves_no_key_or_content_at_rest(st: SqliteStore, tmp_path: Path) -> None:
    """What the contract's revocation tests read through the store is also gone from the files:
    no wrapped key, no kept view, only the direct copy's attachment ciphertext."""
    saved = st.save_message(new_message())
    st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"ATTACHMENT" * 1000)
    st.save_portal_view(saved.id, b"VIEW")
    assert st.revoke(saved.id, "sender withdrew it")
    assert len(stored_blobs(tmp_path / "store")) == 1  # the attachment's ciphertext
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert db.execute("SELECT wrapped_key, portal_view FROM messages").fetchall() == [(None, None)]
    assert db.execute("SELECT kind FROM blobs WHERE deleted_at IS NULL").fetchall() == [
        ("attachment",)
    ]
    db.close()
    plain = st.save_message(new_message())
    assert st.revoke(plain.id)
    assert len(stored_blobs(tmp_path / "store")) == 1  # nothing more of the second one


def test_discarded_message_leaves_no_blob(st: SqliteStore, tmp_path: Path) -> None:
    saved = st.save_message(new_message())
    st.discard(saved.id)
    assert stored_blobs(tmp_path / "store") == []


def test_opens_commit_without_an_fsync_of_their_own(st: SqliteStore) -> None:
    saved = st.save_message(new_message())
    (rec, *_) = st.recipients(saved.id)
    st.mark_opened(rec.id)
    # opens commit without an fsync of their own; everything else stays synchronous=FULL
    assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_remembered_numbers_are_not_in_clear_at_rest(st: SqliteStore, tmp_path: Path) -> None:
    st.remember_contact("bob@example.net", sms=PHONE)
    st.save_message(
        new_message(
            recipients=[
                NewRecipient("bob@example.net", 1, "sms", "notification", "A5", verification="sms")
            ]
        )
    )
    for data in store_files(tmp_path / "store").values():
        assert PHONE.encode() not in data


def test_the_addresses_tried_without_an_account_are_not_in_the_store_files(
    st: SqliteStore, tmp_path: Path
) -> None:
    """A stolen database does not list the addresses someone tried to sign in as (their
    counters are named by an HMAC under the KEK), nor lets anyone test a guess: the name of a
    guess under another key is not in it either."""
    from tests.store.common import _lock_after_five
    from zivmilter.store.sealing import Sealing

    tried = ["probe.one@example.org", "probe.two@example.org"]
    for address in tried:
        for _ in range(5):
            st.settle_sign_in(st.claim_sign_in(address, _lock_after_five), False)
    assert not st.claim_sign_in(tried[0], _lock_after_five).admitted  # counted and locked
    st.close()
    guessed = Sealing.from_bytes(os.urandom(32)).sign_in_tag(tried[0])
    for name, data in store_files(tmp_path / "store").items():
        for needle in [*tried, "probe.one", "probe.two", guessed]:
            assert needle.encode() not in data, f"{needle!r} in {name}"


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


def test_orphan_blobs_are_swept(st: SqliteStore, tmp_path: Path, clock: Clock) -> None:
    saved = st.save_message(new_message())
    orphan = tmp_path / "store" / "blobs" / "ab" / "abcd.zmb"
    orphan.parent.mkdir()
    orphan.write_bytes(b"ZMB1...")
    os.utime(orphan, (clock.t - 7200, clock.t - 7200))
    assert st.sweep_orphans() == 1
    assert not orphan.exists()
    assert st.open_content(saved.id) is not None


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


def _undo_schemas_8_up(conn: sqlite3.Connection) -> None:
    """Take a database back before schema 8 (the sender's side of the portal), 9 (session
    generations), 10 (attachments kept apart), 11 (retries' handovers), 12 (trusted devices),
    13 (claims on shared download links), 14 (recipients' imported keys), 15 (carried
    access-code peppers), 16 (the language a contact chose), 18 (sign-in counts of
    addresses without an account) and 19 (attachments kept for a retry)."""
    conn.execute("DROP TABLE handover_attachments")  # schema 19
    conn.execute("DROP TABLE sign_in_counts")  # schema 18
    conn.execute("ALTER TABLE contacts DROP COLUMN language")  # schema 16
    conn.execute("DROP TABLE peppers")  # schema 15
    conn.execute("DROP TABLE recipient_key_addresses")  # schema 14
    conn.execute("DROP TABLE recipient_keys")
    conn.execute("DROP TABLE claim_budget")  # schema 13
    conn.execute("DROP TABLE download_claims")
    conn.execute("DROP TABLE devices")  # schema 12
    conn.execute("DROP TABLE handed_copies")  # schema 11
    conn.execute("DROP TABLE handovers")
    conn.execute("DROP TABLE parts")  # schema 10
    conn.execute("ALTER TABLE recipients DROP COLUMN session_gen")  # schema 9
    conn.execute("ALTER TABLE accounts DROP COLUMN session_gen")
    conn.execute("DROP TABLE invites")
    for column in ("failed_attempts", "failed_streak", "lockouts", "locked_until"):
        conn.execute(f"ALTER TABLE accounts DROP COLUMN {column}")
    conn.execute("ALTER TABLE recipients DROP COLUMN receipt_sent_at")


def test_a_store_of_files_is_read_after_the_upgrade(tmp_path: Path, kek: bytes) -> None:
    # Stores written before contents moved into the rows (schema 4) keep their files readable.
    path = str(tmp_path / "store")
    old = SqliteStore.open(path, kek, inline_max=0)
    first = old.save_message(new_message())
    old._conn.execute("UPDATE schema_version SET version = 4")
    old._conn.execute("ALTER TABLE blobs DROP COLUMN data")
    old._conn.execute("ALTER TABLE attachments DROP COLUMN wrapped_key")  # schema 6
    old._conn.execute("ALTER TABLE replies DROP COLUMN refused_at")  # schema 7
    _undo_schemas_8_up(old._conn)
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
    _undo_schemas_8_up(old._conn)
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
    assert st.commit_batches() == (1, 6)
    assert len(saved) == 6
    _committed(tmp_path, saved)
    for message_id in saved:
        stream = st.open_content(message_id)
        assert stream is not None and stream.read() == raw_message()


def test_close_writes_the_saves_queued_before_it(
    st: SqliteStore, tmp_path: Path, kek: bytes
) -> None:
    """Stopping the milter (close) while saves wait for their commit: each is written and
    answered first, none dropped; a save after close fails as a store error."""
    quick = [r for r in recipients() if r.verification != "access_code"]
    saved: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: saved.append(st.save_message(new_message(recipients=quick)).id)
        )
        for _ in range(3)
    ]
    closer = threading.Thread(target=st.close)
    with st._lock:  # a commit under way: the three queue up, then close() is called
        for t in threads:
            t.start()
        _queued(st, 3)
        closer.start()
    closer.join()
    for t in threads:
        t.join()
    assert len(saved) == 3
    _committed(tmp_path, saved)
    with pytest.raises(StoreError, match="closed"):
        st.save_message(new_message(recipients=quick))
    again = SqliteStore.open(str(tmp_path / "store"), kek)
    try:
        for message_id in saved:
            stream = again.open_content(message_id)
            assert stream is not None and stream.read() == raw_message()
    finally:
        again.close()


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


_TAKE_EXCLUSIVELY = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    db.execute("PRAGMA locking_mode=EXCLUSIVE")
    db.execute("BEGIN EXCLUSIVE")
    db.execute("ROLLBACK")
    print("taken")
except sqlite3.OperationalError as exc:
    print("refused:", exc)
"""


def test_a_second_store_in_one_process_keeps_the_first_ones_locks(
    tmp_path: Path, kek: bytes
) -> None:
    """SQLite's locks are POSIX locks: per process and file, and closing any descriptor of the
    file drops all of them. Opening and closing another store on the same database in this
    process must leave store A's hold on it: another process still cannot take the database
    exclusively (and so cannot, for example, delete the WAL under A)."""
    path = str(tmp_path / "store")
    db = os.path.join(path, store.DB_NAME)

    def other_process() -> str:
        probe = [sys.executable, "-c", _TAKE_EXCLUSIVELY, db]
        return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()

    a = SqliteStore.open(path, kek)
    saved = a.save_message(new_message())
    assert other_process().startswith("refused: database is locked")
    b = SqliteStore.open(path, kek)
    b.close()
    assert other_process().startswith("refused: database is locked")
    content = a.open_content(saved.id)
    assert content is not None and content.read() == raw_message()
    a.close()
    assert other_process() == "taken"  # the probe itself can take it once A is gone


def _files_holding(root: Path, data: bytes) -> list[str]:
    return [name for name, content in store_files(root).items() if data in content]


def test_a_reader_delays_the_erasure_of_a_revoked_key_and_it_is_reported(
    st: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revoked message's wrapped key lives on in the WAL while another connection holds a
    read transaction: `finish_erasure` says so, and says when it is gone."""
    monkeypatch.setattr(defaults, "STORE_CHECKPOINT_WAIT", 0.1)  # the reader will not let go
    saved = st.save_message(new_message())
    db = os.path.join(tmp_path / "store", store.DB_NAME)
    reader = sqlite3.connect(db, isolation_level=None)
    (wrapped,) = reader.execute("SELECT wrapped_key FROM messages").fetchone()
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # a snapshot from before
    assert st.revoke(saved.id)
    assert _files_holding(tmp_path / "store", bytes(wrapped)) != []  # still on the disk
    assert not st.finish_erasure(wait=0.1)
    reader.execute("COMMIT")
    reader.close()
    assert st.finish_erasure()
    assert _files_holding(tmp_path / "store", bytes(wrapped)) == []


def test_revoke_says_the_key_is_destroyed_only_when_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zivmilter revoke` while another process reads the store: it does not claim the key
    destroyed, it says when it will be; `maintenance` then finishes it and says so."""
    monkeypatch.setattr(defaults, "STORE_CHECKPOINT_WAIT", 0.1)  # the reader will not let go
    crypto.keygen(str(tmp_path / "store.key"))
    cfg = tmp_path / "zivmilter.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "organization": {"name": "Hospital", "domains": ["hospital.example"]},
                "store": {"path": str(tmp_path / "store"), "key_file": str(tmp_path / "store.key")},
            }
        )
    )
    s = SqliteStore.open(str(tmp_path / "store"), crypto.load_kek(str(tmp_path / "store.key")))
    saved = s.save_message(new_message(rfc822_id="<held@hospital.example>"))
    s.close()
    reader = sqlite3.connect(os.path.join(tmp_path / "store", store.DB_NAME), isolation_level=None)
    (wrapped,) = reader.execute("SELECT wrapped_key FROM messages").fetchone()
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()

    assert cli.main(["revoke", "<held@hospital.example>", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"{saved.id} (<held@hospital.example>): revoked" in out
    assert "data key destroyed" not in out
    assert "gone at the next checkpoint" in out and "zivmilter maintenance" in out
    assert _files_holding(tmp_path / "store", bytes(wrapped)) != []

    assert cli.main(["maintenance", "--config", str(cfg)]) == 1  # the reader still holds it
    assert "a copy may remain in the write-ahead log" in capsys.readouterr().out
    reader.execute("COMMIT")
    reader.close()
    assert cli.main(["maintenance", "--config", str(cfg)]) == 0
    assert "revoked data keys: erased from the disk" in capsys.readouterr().out
    assert _files_holding(tmp_path / "store", bytes(wrapped)) == []


def test_attachments_kept_apart_go_with_their_message_at_rest(
    st: SqliteStore, tmp_path: Path
) -> None:
    """A message's large attachments kept apart (schema 8) are sealed under its key: a
    revocation leaves neither their ciphertext nor their names."""
    part = NewPart(3, "PARTNAME-patient.pdf", "application/pdf", b"PARTBODY" * 50_000)
    saved = st.save_message(new_message(parts=[part]))
    files = store_files(tmp_path / "store")
    assert not any(b"PARTNAME" in data or b"PARTBODY" in data for data in files.values())
    assert len(stored_blobs(tmp_path / "store")) == 2
    assert st.revoke(saved.id)
    assert stored_blobs(tmp_path / "store") == []
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert db.execute("SELECT filename FROM parts").fetchall() == [(None,)]
    db.close()


def test_a_failed_save_leaves_no_blob_of_its_parts(st: SqliteStore, tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise OSError("spool unreadable")

    parts = [
        NewPart(1, "a.pdf", "application/pdf", os.urandom(600_000)),
        NewPart(2, "b.pdf", "application/pdf", Broken()),  # type: ignore[arg-type]
    ]
    with pytest.raises(OSError):
        st.save_message(new_message(raw_message(extra=b"z" * 600_000), parts=parts))
    assert stored_blobs(tmp_path / "store") == []
    assert list((tmp_path / "store" / "blobs").rglob("*.tmp")) == []
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    db.close()
