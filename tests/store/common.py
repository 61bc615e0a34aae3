"""What the store tests share: the values they save and the clock they travel in time with."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from zivmilter import defaults, store
from zivmilter.store import NewMessage, NewRecipient, SqliteStore

MARK_BODY = "BODYMARKER-6c1e9d"


MARK_SUBJECT = "SUBJECTMARKER-b27f"


PHONE = "+31612345321"


CODE = "ACCESSCODE-93kq"


HINT = "HINTMARKER-the name of our project"


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def inline(st: SqliteStore) -> bool:
    return bool(st._inline_max)


def stored_blobs(root: Path) -> list[tuple[str, bytes]]:
    """Every encrypted content at rest: blob files, and ciphertexts kept in `blobs` rows."""
    found = [(str(p), p.read_bytes()) for p in (root / "blobs").rglob("*.zmb")]
    db = sqlite3.connect(str(root / store.DB_NAME))
    try:
        rows = db.execute("SELECT id, data FROM blobs WHERE data IS NOT NULL").fetchall()
    finally:
        db.close()
    return found + [(f"row {r[0]}", bytes(r[1])) for r in rows]


def raw_message(marker: str = MARK_BODY, extra: bytes = b"") -> bytes:
    return (
        b"From: Alice <alice@example.org>\r\n"
        b"To: bob@example.net, carol@example.com\r\n"
        b"Subject: " + MARK_SUBJECT.encode() + b"\r\n"
        b"Message-ID: <m1@example.org>\r\n"
        b"\r\n"
        b"Dear Bob,\r\n" + marker.encode() + b"\r\n" + extra + b"-- \r\nAlice\r\n"
    )


def recipients() -> list[NewRecipient]:
    return [
        NewRecipient(
            "Bob@Example.NET", 1, "access_right", "notification", "A3", None, "sms", PHONE
        ),
        NewRecipient(
            "carol@example.com",
            1,
            "access_right",
            "notification",
            "A3",
            None,
            "access_code",
            access_code=CODE,
            hint=HINT,
        ),
        NewRecipient("dave@example.net", 2, "email", "notification", "A7", verification="email"),
        NewRecipient("erin@example.org", 1, "transport", "direct", "A4", level="pkix"),
    ]


def new_message(content: object = None, **kw: object) -> NewMessage:
    args: dict[str, object] = {
        "sender": "Alice@Example.ORG",
        "subject": MARK_SUBJECT + " Grüße",
        "content": raw_message() if content is None else content,
        "recipients": recipients(),
        "rfc822_id": "<m1@example.org>",
        "queue_id": "4XyZ12",
    }
    args.update(kw)
    return NewMessage(**args)  # type: ignore[arg-type]


def store_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _committed(tmp_path: Path, ids: list[str]) -> None:
    """The rows are committed when save returns: another connection sees them."""
    db = sqlite3.connect(str(tmp_path / "store" / store.DB_NAME))
    assert sorted(r[0] for r in db.execute("SELECT id FROM messages")) == sorted(ids)
    assert db.execute("SELECT count(*) FROM blobs").fetchone()[0] == len(ids)
    db.close()


def _lock_after_five(streak: int, lockouts: int) -> float | None:
    return 60.0 * 2**lockouts if streak >= defaults.LOCKOUT_AFTER else None


def _queued(st: SqliteStore, n: int) -> None:
    for _ in range(500):
        if len(st._queued) == n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{len(st._queued)} saves queued, expected {n}")


# Another process (as the milter would be) inside a write transaction on a SQLite database: a
# row written and not committed, the write lock held until the block ends.
_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO audit (at, event) VALUES (1, 'uncommitted')")
print("held", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


@contextlib.contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """`db`'s write lock held by another process (BEGIN IMMEDIATE and an uncommitted row) while
    the block runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
