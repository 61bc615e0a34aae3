"""What is PostgreSQL's own: the schema upgraded by `zivmilter store migrate` only (an older one
refused at start, its rows kept), revocation's deleted keys leaving the table's file, and
`zivmilter store copy` from SQLite to PostgreSQL and back. A private cluster
(tests/harness/postgres.py)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from tests.harness.postgres import Cluster, shared_cluster
from tests.store.common import MARK_BODY, _lock_after_five, new_message, raw_message
from zivmilter import crypto
from zivmilter.cli import main
from zivmilter.core import config
from zivmilter.errors import StoreError
from zivmilter.store import NewPart, PartRecord, StoredKey, open_store
from zivmilter.store.postgresql import PostgresStore, schema
from zivmilter.store.postgresql.connection import describe
from zivmilter.store.sealing import Sealing
from zivmilter.store.sqlite import SqliteStore

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Cluster:
    return shared_cluster()


def write_config(tmp: Path, name: str, store: str) -> str:
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"organization: {{domains: [hospital.example]}}\nstore:\n  key_file: {tmp / 'store.key'}\n"
        + store
    )
    return str(path)


def pg_config(tmp: Path, name: str, dsn: str) -> str:
    return write_config(
        tmp,
        name,
        f"  backend: postgresql\n  dsn: '{dsn}'\n  password_file: {os.environ['PGPASSFILE']}\n",
    )


def test_an_unmigrated_database_is_refused_until_store_migrate(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crypto.keygen(str(tmp_path / "store.key"))
    cfg_path = pg_config(tmp_path, "pg", cluster.dsn(cluster.empty_database()))
    cfg = config.load(cfg_path)
    with pytest.raises(StoreError, match=r"no zivmilter schema yet: run `zivmilter store migrate"):
        open_store(cfg)
    assert main(["store", "migrate", "--config", cfg_path]) == 0
    assert f"schema version 0 -> {schema.SCHEMA_VERSION}" in capsys.readouterr().out
    assert main(["store", "migrate", "--config", cfg_path]) == 0  # again: nothing to do
    assert "up to date" in capsys.readouterr().out
    with contextlib.closing(open_store(cfg)) as st:
        assert st.open_content(st.save_message(new_message()).id) is not None


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
def test_an_older_schema_is_refused_at_start_naming_the_command(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: bool
) -> None:
    """A zivmilter one schema version ahead of the database (as after an upgrade of the code);
    a read-only open (the commands that only read) is refused with the same words."""
    dsn = cluster.database_for(tmp_path)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as info:
        PostgresStore.open(dsn, os.urandom(32), read_only=read_only)
    assert str(info.value) == (
        f"PostgreSQL {describe(dsn)}: store schema version {schema.SCHEMA_VERSION - 1} is older"
        f" than this zivmilter ({schema.SCHEMA_VERSION}): run `zivmilter store migrate --config"
        " FILE`"
    )


def test_a_version_1_store_is_migrated_to_the_senders_side_keeping_its_rows(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database the zivmilter before issue 19 made (schema 1), with an account and a message,
    upgraded by `zivmilter store migrate`: the account gets an invitation and counts sign-ins,
    the recipient its one read receipt."""
    crypto.keygen(str(tmp_path / "store.key"))
    cfg_path = pg_config(tmp_path, "pg", cluster.dsn(cluster.empty_database()))
    cfg = config.load(cfg_path)
    kek = crypto.load_kek(cfg.store.key_file)
    with monkeypatch.context() as old:
        old.setattr(schema, "_MIGRATIONS", schema._MIGRATIONS[:1])
        old.setattr(schema, "SCHEMA_VERSION", 1)
        assert main(["store", "migrate", "--config", cfg_path]) == 0
        assert "schema version 0 -> 1" in capsys.readouterr().out
        with contextlib.closing(PostgresStore.open(cfg.store.dsn, kek)) as st:
            saved = st.save_message(new_message())
        # the account as schema 1's zivmilter wrote it (today's add_account names later columns)
        with psycopg.connect(cfg.store.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO accounts (address, kind, active, password_hash, created_at)"
                " VALUES ('alice@example.org', 'sender', TRUE, '$argon2id$x', 0)"
            )
    with pytest.raises(StoreError, match="older than this zivmilter"):
        open_store(cfg)
    assert main(["store", "migrate", "--config", cfg_path]) == 0
    assert f"schema version 1 -> {schema.SCHEMA_VERSION}" in capsys.readouterr().out
    with contextlib.closing(open_store(cfg)) as st:
        acct = st.account("alice@example.org")
        assert acct is not None and acct.password_hash == "$argon2id$x"
        token = st.add_invite("alice@example.org", 3600)
        assert token is not None
        assert st.invite_address(crypto.token_hash(token)) == "alice@example.org"
        assert st.claim_sign_in("alice@example.org", _lock_after_five).counted
        rid = st.recipients(saved.id)[0].id
        assert st.claim_read_receipt(rid) and not st.claim_read_receipt(rid)
        # Schemas 3-5 (issue 15) on the old rows: session generations from 0, no parts kept
        # apart (the portal parses the message), a handover remembered.
        assert st.session_generation(rid) == 0
        st.end_sessions(rid, "signed out")
        assert st.session_generation(rid) == 1
        assert st.part(saved.id, 0) is None
        st.remember_handover(saved.id, "a" * 64, saved.tokens)
        handover = st.find_handover("a" * 64, 3600)
        assert handover is not None and handover.tokens == saved.tokens


def _key_table_file(cluster: Cluster, database: str) -> bytes:
    cluster.psql("CHECKPOINT", database)
    rel = cluster.psql("SELECT pg_relation_filepath('message_keys')", database).strip()
    return (cluster.data / rel).read_bytes()


def test_a_revoked_key_leaves_the_key_tables_file_at_maintenance(
    cluster: Cluster, tmp_path: Path
) -> None:
    """README "Several nodes": revoking deletes the wrapped key at once (no node can read the
    message); the deleted row lives on in its page until maintenance rewrites the key table;
    after that, the table's file no longer holds the key."""
    dsn = cluster.database_for(tmp_path)
    database = dsn.split("dbname=")[1].split()[0]
    st = PostgresStore.open(dsn, os.urandom(32))
    try:
        saved = st.save_message(new_message())
        keep = st.save_message(new_message())
        hexkey = cluster.psql(
            f"SELECT encode(wrapped_key, 'hex') FROM message_keys WHERE message_id = '{saved.id}'",
            database,
        ).strip()
        wrapped = bytes.fromhex(hexkey)
        assert wrapped in _key_table_file(cluster, database)
        assert st.revoke(saved.id, "test")
        assert st.open_content(saved.id) is None
        assert cluster.psql("SELECT count(*) FROM message_keys", database).strip() == "1"
        assert wrapped in _key_table_file(cluster, database)  # a dead tuple, still in its page
        st.purge_expired()  # maintenance: rewrites the key table
        assert wrapped not in _key_table_file(cluster, database)
        content = st.open_content(keep.id)
        assert content is not None and content.read() == raw_message()
    finally:
        st.close()


_RECIPIENT_KEY = StoredKey("C" * 40, "openpgp", ("carol@example.com",), b"\x99pgp")


def test_store_copy_sqlite_to_postgresql_and_back(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crypto.keygen(str(tmp_path / "store.key"))
    first = write_config(tmp_path, "first", f"  path: {tmp_path / 'first'}\n")
    pg = pg_config(tmp_path, "pg", cluster.database_for(tmp_path))
    back = write_config(tmp_path, "back", f"  path: {tmp_path / 'back'}\n")
    big = raw_message("BIG", extra=os.urandom(600_000))  # a blob file in SQLite
    scan = os.urandom(700_000)  # a large attachment kept apart: a blob file in SQLite
    parts = [
        NewPart(2, "scan 1.pdf", "application/pdf", scan),
        NewPart(4, "röntgen.png", "image/png", b"PNG" * 10),  # kept in its row
    ]
    with contextlib.closing(open_store(config.load(first))) as st:
        small = st.save_message(new_message())
        large = st.save_message(new_message(big, parts=parts))
        revoked = st.save_message(new_message(parts=parts[1:]))
        st.revoke(revoked.id, "test")
        (rec, *_) = st.recipients(small.id)
        reply = st.save_reply(rec.id, b"Subject: Re\r\n\r\nthanks\r\n")
        kept = st.save_attachment(large.id, "scan.pdf", "application/pdf", os.urandom(400_000))
        st.add_account(
            "bob@example.net", "recipient", password_hash="$argon2id$x", totp_secret=b"K"
        )
        st.remember_contact("carol@example.com", sms="+31612345678")
        st.remember_language("carol@example.com", "de")  # issue 25: the portal's choice
        st.remember_device("carol@example.com", "d" * 64, time.time() + 3600)  # issue 25
        st.import_recipient_key(_RECIPIENT_KEY)  # issue 26
        # The sender's side (issue 19): an invitation, a streak of wrong sign-ins, a receipt.
        st.add_account("alice@example.org", "sender")
        invite = st.add_invite("alice@example.org", 3600)
        assert invite is not None
        for _ in range(4):
            st.settle_sign_in(st.claim_sign_in("alice@example.org", _lock_after_five), False)
        st.add_account("dave@example.org", "sender")
        locked = st.claim_sign_in("dave@example.org", lambda streak, lockouts: 3600.0)
        assert locked.locked_until is not None
        # ...and an address without an account, locked alike (its counters' own table)
        probed = st.claim_sign_in("nobody@example.org", lambda streak, lockouts: 3600.0)
        assert probed.locked_until is not None
        assert st.claim_read_receipt(rec.id)
        # Issue 15: a sign-out and an account switched off and on (session generations), and
        # a retry's handover with a copy the MTA took.
        st.end_sessions(rec.id, "signed out")
        st.set_account_active("bob@example.net", False)
        st.set_account_active("bob@example.net", True)
        st.remember_handover(small.id, "a" * 64, small.tokens)
        st.mark_handed(small.id, "notification to bob@example.net")
        linked = st.save_attachment(small.id, "scan 2.pdf", "application/pdf", b"%PDF" * 9, "k/1")
        # Issue 15 item 12: a claim on the shared download link, its code and wrong streak,
        # and the address's hourly budget that code took a share of.
        claim = st.open_claim(kept.id, "dan@partner.example", None)
        assert st.issue_claim_code(claim, b"S" * 20, 0, 10, 1) == 0.0
        for _ in range(4):
            answer = st.claim_answer(claim, _lock_after_five, funded=False, per_hour=1)
            st.settle_claim_answer(answer, False)
    # Issue 16: a rotated store's carried pepper (an access code made under a retired key),
    # and another retired key's that no hash names, marked by maintenance to be pruned.
    old_key, unused_key = tmp_path / "old.key", tmp_path / "unused.key"
    crypto.keygen(str(old_key))
    crypto.keygen(str(unused_key))
    unused_id = crypto.key_id(crypto.load_kek(str(unused_key))).hex()
    ring = SqliteStore.open(
        str(tmp_path / "first"),
        crypto.load_kek(str(tmp_path / "store.key")),
        previous=[crypto.load_kek(str(old_key)), crypto.load_kek(str(unused_key))],
    )
    with contextlib.closing(ring):
        old_sealing = Sealing.from_bytes(crypto.load_kek(str(old_key)))
        old_hash = old_sealing.hash_access_code("OLD-CODE")
        ring.remember_contact("erin@example.net", access_code_hash=old_hash)
        while ring.rekey_batch(100):
            pass
        assert ring.prune_peppers() == []  # the unused one marked
    assert main(["store", "copy", "--from", first, "--to", pg]) == 0
    out = capsys.readouterr().out
    assert "copied sqlite -> postgresql: messages 3," in out and "checked: 9 " in out
    assert main(["store", "copy", "--from", pg, "--to", back]) == 0
    assert "copied postgresql -> sqlite: messages 3," in capsys.readouterr().out
    for cfg in (pg, back):
        with contextlib.closing(open_store(config.load(cfg))) as st:
            content = st.open_content(large.id)
            assert content is not None and content.read() == big
            assert st.open_content(revoked.id) is None
            rep = st.open_reply(reply)
            assert rep is not None and rep.read() == b"Subject: Re\r\n\r\nthanks\r\n"
            assert st.open_attachment(kept.id) is not None
            assert st.find_recipient_by_token(small.tokens["bob@example.net"]) is not None
            assert st.totp_secret("bob@example.net") == b"K"
            contact = st.contact("carol@example.com")
            assert contact is not None and contact.sms == "+31612345678"
            assert contact.language == "de"
            assert st.devices() == {"carol@example.com": 1}
            assert st.recipient_keys("carol@example.com") == [
                replace(_RECIPIENT_KEY, imported_at=st.recipient_keys()[0].imported_at)
            ]
            assert st.use_device("carol@example.com", "d" * 64)
            assert st.access_code_matches(old_hash, "OLD-CODE")  # the old key file not there
            assert st.key_usage().depending_on_others() == 0
            old_id = old_sealing.key_id.hex()
            assert st.key_usage().peppers == {old_id: 1, unused_id: 0}
            assert st.prune_peppers(grace=0) == [unused_id]  # its mark came along
            assert st.invite_address(crypto.token_hash(invite)) == "alice@example.org"
            fifth = st.claim_sign_in("alice@example.org", _lock_after_five)
            assert fifth.admitted and fifth.locked_until is not None  # the streak came along
            refused = st.claim_sign_in("dave@example.org", _lock_after_five)
            assert not refused.admitted and refused.locked_until == locked.locked_until
            refused = st.claim_sign_in("nobody@example.org", _lock_after_five)
            assert not refused.admitted and refused.locked_until == probed.locked_until
            assert not st.claim_read_receipt(rec.id)  # sent already
            assert st.session_generation(rec.id) == 2  # the link's 1 and the account's 1
            handover = st.find_handover("a" * 64, 3600)
            assert handover is not None and handover.message_id == small.id
            assert handover.tokens == small.tokens
            assert handover.handed == {"notification to bob@example.net"}
            assert handover.attachments == {"k/1": linked}  # its token: the same link again
            assert st.part(large.id, 2) == PartRecord(2, "scan 1.pdf", "application/pdf", 700_000)
            part = st.open_part(large.id, 2)
            assert part is not None and part.read() == scan
            part = st.open_part(large.id, 4)
            assert part is not None and part.read() == b"PNG" * 10
            assert st.part(revoked.id, 4) is None and st.open_part(revoked.id, 4) is None
            claimed = st.claim(claim)
            assert claimed is not None and claimed.address == "dan@partner.example"
            code = st.claim_code(claim)
            assert code is not None and code.secret == b"S" * 20
            fifth = st.claim_answer(claim, _lock_after_five, funded=False, per_hour=1)
            assert fifth.admitted and fifth.locked_until is not None  # the streak came along
            again = st.open_claim(kept.id, "dan@partner.example", None)
            assert st.issue_claim_code(again, b"T" * 20, 0, 10, 1) == float("inf")  # budget too
            new = st.save_message(new_message())  # ids continue after the copied ones
            assert len(st.recipients(new.id)) == 4
    # Into a store that is not empty: refused, nothing written.
    assert main(["store", "copy", "--from", first, "--to", pg]) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_request_scope_holds_one_pooled_connection_and_gives_it_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A pool of one: a scope's calls, a large content's chunks read on the way among them, all
    go over the one connection the scope holds (a second one from the pool would never come),
    and the next caller, on another thread, gets it back when the scope ends."""
    st = PostgresStore.open(
        cluster.database_for(tmp_path), os.urandom(32), pool_size=1, inline_max=0
    )
    try:
        saved = st.save_message(new_message(raw_message(extra=os.urandom(300_000))))
        rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
        assert rec is not None
        read: list[bytes] = []

        def page() -> None:
            with st.request_scope():
                assert st.link_view(rec.id) is not None
                content = st.open_content(saved.id)
                assert content is not None
                with content:
                    read.append(content.read())
                assert st.mark_opened(rec.id)

        for _ in range(2):
            worker = threading.Thread(target=page)
            worker.start()
            worker.join(10)
            assert not worker.is_alive(), "the scope waited for a second connection"
        assert len(read) == 2 and all(MARK_BODY.encode() in r for r in read)
        # a fault inside the scope: the connection still goes back
        with contextlib.suppress(StoreError), st.request_scope():
            st.link_view(rec.id)
            with st._transaction() as cur:
                cur.execute("SELECT no_such_column FROM recipients")
        assert [e.event for e in st.events(saved.id)].count("opened") == 2
    finally:
        st.close()


def test_a_pool_with_no_connection_free_says_so(cluster: Cluster, tmp_path: Path) -> None:
    """A pool of one, its connection held by a request scope: another caller waits the pool's
    timeout and gets a StoreError that says no connection was free."""
    st = PostgresStore.open(cluster.database_for(tmp_path), os.urandom(32), pool_size=1)
    try:
        saved = st.save_message(new_message())
        st._connections.pool.timeout = 0.5  # the wait for a free connection, 30 s in service
        errors: list[str] = []

        def other() -> None:
            try:
                st.recipients(saved.id)
            except StoreError as exc:
                errors.append(str(exc))

        with st.request_scope():
            assert st.recipients(saved.id)  # the scope now holds the only connection
            worker = threading.Thread(target=other)
            worker.start()
            worker.join(10)
        assert len(errors) == 1 and errors[0].startswith("store database: no connection free: ")
    finally:
        st.close()


def test_an_open_commits_without_waiting_for_its_wal_flush_and_only_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    """mark_opened is one statement in autocommit that sets synchronous_commit=off for its own
    transaction (README "Several nodes": a crash of the database server may drop the last few
    opens): 40 opens cost far fewer WAL syncs than 40, and the connection they ran on (a
    request scope's) commits synchronously again after them."""
    st = PostgresStore.open(cluster.database_for(tmp_path), os.urandom(32), pool_size=2)
    try:
        saved = st.save_message(new_message())
        rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
        assert rec is not None

        def wal_syncs() -> int:
            with st._read() as cur:
                cur.execute("SELECT pg_stat_force_next_flush()")
            with st._read() as cur:  # the flush happens as a statement ends: read after it
                row = cur.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
            assert row is not None
            return int(row[0])

        before = wal_syncs()
        with st.request_scope():
            for _ in range(40):
                assert st.mark_opened(rec.id)
            with st._read() as cur:
                assert cur.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert wal_syncs() - before < 20
        assert [e.event for e in st.events(saved.id)].count("opened") == 40
    finally:
        st.close()
