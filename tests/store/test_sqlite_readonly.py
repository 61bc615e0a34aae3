"""SQLite's side of a read-only open (`mode=ro`): no write lock (it reads while the milter is in
a write transaction), nothing made (no folder, no database, no migration), and files the reader
may only read. What every backend does read-only is test_contract_readonly.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.store.common import Clock, new_message, raw_message, write_locked
from zivmilter import store
from zivmilter.errors import StoreError
from zivmilter.store import SqliteStore


def test_reads_while_another_process_holds_the_write_lock(
    sqlite_st: SqliteStore, tmp_path: Path, kek: bytes, clock: Clock
) -> None:
    saved = sqlite_st.save_message(new_message())
    with write_locked(tmp_path / "store" / store.DB_NAME):
        ro = SqliteStore.open(str(tmp_path / "store"), kek, now=clock, read_only=True)
        try:
            content = ro.open_content(saved.id)
            assert content is not None and content.read() == raw_message()
            # what the other process has not committed is not read
            assert "uncommitted" not in [e.event for e in ro.export_events()]
        finally:
            ro.close()


def test_a_missing_store_is_an_error_naming_it_and_nothing_is_made(
    tmp_path: Path, kek: bytes
) -> None:
    nowhere = tmp_path / "nowhere"
    with pytest.raises(StoreError, match=f"^{nowhere}: no store here"):
        SqliteStore.open(str(nowhere), kek, read_only=True)
    assert not nowhere.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StoreError, match=f"^{empty}: no store here"):
        SqliteStore.open(str(empty), kek, read_only=True)
    assert list(empty.iterdir()) == []


def test_a_database_without_a_schema_is_refused(tmp_path: Path, kek: bytes) -> None:
    (tmp_path / "store").mkdir()
    sqlite3.connect(tmp_path / "store" / store.DB_NAME).close()  # an empty file
    with pytest.raises(StoreError, match=r"no zivmilter store in store\.sqlite3"):
        SqliteStore.open(str(tmp_path / "store"), kek, read_only=True)


@pytest.mark.parametrize(
    ("delta", "says"),
    [(-1, "is older than this zivmilter .* store migrate"), (1, "is newer than this zivmilter")],
)
def test_another_schema_version_is_refused_and_left_as_it_is(
    tmp_path: Path, kek: bytes, delta: int, says: str
) -> None:
    SqliteStore.open(str(tmp_path / "store"), kek).close()
    db = tmp_path / "store" / store.DB_NAME
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("UPDATE schema_version SET version = ?", (store.SCHEMA_VERSION + delta,))
    raw.close()
    with pytest.raises(StoreError, match=says):
        SqliteStore.open(str(tmp_path / "store"), kek, read_only=True)
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT version FROM schema_version").fetchone()[0] == (
        store.SCHEMA_VERSION + delta
    )
    raw.close()


# --- a reader that may not write the store's files -------------------------------------------

# Run as another process: as root it first imports what it needs, then becomes `nobody` (the
# venv's interpreter is not readable to nobody, so it cannot be started as nobody); as any
# other user it stays itself, and the test makes the files read-only to it instead.
_READER = """
import hashlib, json, os, sys
from zivmilter.errors import StoreError
from zivmilter.store import SqliteStore
args = json.loads(sys.stdin.read())
if os.geteuid() == 0:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
out = {}
try:
    st = SqliteStore.open(args["path"], bytes.fromhex(args["kek"]), read_only=True)
except StoreError as exc:
    out["error"] = str(exc)
else:
    content = st.open_content(args["message"])
    out["content"] = None if content is None else hashlib.sha256(content.read()).hexdigest()
    try:
        st.set_idd_domain("partner.example", True)
    except StoreError as exc:
        out["write"] = str(exc)
    st.close()
print(json.dumps(out))
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="zivmilter-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder, dirs, _files in os.walk(path):
            for d in dirs:  # a test made them read-only, or closed (its parent first)
                os.chmod(os.path.join(folder, d), 0o700)
        shutil.rmtree(path)


def _readable_only(root: Path) -> dict[str, tuple[int, int]]:
    """Make the store readable but not writable to the reader: as root (the reader is nobody)
    group and others may read; as another user, nobody may write. Returns each file's owner
    and mode."""
    root_run = os.geteuid() == 0
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755 if root_run else 0o555)
        else:
            path.chmod(0o644 if root_run else 0o444)
    return {str(p): (p.stat().st_uid, p.stat().st_mode) for p in root.rglob("*")}


def _read_as_another(root: Path, kek: bytes, message_id: str) -> dict[str, Any]:
    args = {"path": str(root), "kek": kek.hex(), "message": message_id}
    done = subprocess.run(
        [sys.executable, "-c", _READER],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_a_reader_who_may_not_write_reads_while_the_milter_has_the_store_open(
    shared_dir: Path, kek: bytes
) -> None:
    root = shared_dir / "store"
    writer = SqliteStore.open(str(root), kek)  # as the milter: it keeps the -wal and -shm
    try:
        saved = writer.save_message(new_message())
        files = _readable_only(root)
        assert {f"{root}/{store.DB_NAME}-wal", f"{root}/{store.DB_NAME}-shm"} <= set(files)
        got = _read_as_another(root, kek, saved.id)
        assert got.get("error") is None, got
        assert got["content"] == hashlib.sha256(raw_message()).hexdigest()
        assert "the store is open read-only here" in got["write"]
        after = {str(p): (p.stat().st_uid, p.stat().st_mode) for p in root.rglob("*")}
        assert after == files  # nothing made, nothing taken over
        assert writer.idd_domains() == []
        writer.set_idd_domain("still.example", True)  # the milter still writes
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o700 if path.is_dir() else 0o600)
        writer.close()


def test_a_reader_who_may_not_create_the_wal_files_is_told_so(shared_dir: Path, kek: bytes) -> None:
    """After the last writer closed, SQLite must create the -wal and -shm to read: a reader who
    may not gets an error naming the store and what to do, not a lockless `immutable` read."""
    root = shared_dir / "store"
    writer = SqliteStore.open(str(root), kek)
    saved = writer.save_message(new_message())
    writer.close()
    files = _readable_only(root)
    assert f"{root}/{store.DB_NAME}-wal" not in files
    got = _read_as_another(root, kek, saved.id)
    assert got["error"].startswith(f"{root}: cannot read the store read-only: "), got
    assert f"{store.DB_NAME}-wal" in got["error"] and "Run this as the store's user" in got["error"]
    after = {str(p): (p.stat().st_uid, p.stat().st_mode) for p in root.rglob("*")}
    assert after == files
    assert stat.S_IMODE(root.stat().st_mode) in (0o755, 0o555)


@pytest.mark.integration
def test_on_a_read_only_mount_it_reads_while_the_milter_has_the_store_open(
    tmp_path: Path, kek: bytes
) -> None:
    """A read-only bind mount of a live store (another host's, a container's view): read while
    the writer keeps the -wal and -shm; once it closed, the clear error, not a lockless read."""
    from tests.harness.sandbox import in_sandbox

    assert in_sandbox(), "mounts only inside scripts/sandbox"
    root, view = tmp_path / "store", tmp_path / "view"
    view.mkdir()
    writer = SqliteStore.open(str(root), kek)
    saved = writer.save_message(new_message())
    subprocess.run(["mount", "--bind", str(root), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        ro = SqliteStore.open(str(view), kek, read_only=True)
        content = ro.open_content(saved.id)
        assert content is not None and content.read() == raw_message()
        later = writer.save_message(new_message())  # the writer goes on; the reader sees it
        assert ro.message(later.id) is not None
        ro.close()
        writer.close()
        with pytest.raises(StoreError, match=f"^{view}: cannot read the store read-only: "):
            SqliteStore.open(str(view), kek, read_only=True)
    finally:
        subprocess.run(["umount", str(view)], check=True)
        writer.close()  # when an assertion ended the test early (closing twice is harmless)


def test_a_reader_who_may_not_enter_the_store_s_folder_is_told_so(
    shared_dir: Path, kek: bytes
) -> None:
    root = shared_dir / "store"
    SqliteStore.open(str(root), kek).close()
    _readable_only(root)
    root.chmod(0o700 if os.geteuid() == 0 else 0o000)  # closed to the reader
    got = _read_as_another(root, kek, "m1")
    assert got["error"] == (
        f"{root}: cannot open the store read-only: {root / store.DB_NAME}: Permission denied"
    )
