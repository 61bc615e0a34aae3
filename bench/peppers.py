"""Benchmark: what letting a rotation's carried pepper go costs (store/peppers.py). A portal
answer that proves an access code hashed under a previous key pays one more scrypt and one small
transaction, once per hash (`prove_access_code` against `access_code_matches`); maintenance
counts the live hashes naming each carried pepper (`prune_peppers`, one grouped scan of the
recipients and the contact book) and `status --keys` reads them all (`key_usage`), over a SQLite
store of N recipients. Figures only; under load, compare runs of the same sitting.
Run: .venv/bin/python bench/peppers.py [N]
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from zivmilter.store import NewMessage, NewRecipient, SqliteStore
from zivmilter.store.sqlite.schema import DB_NAME

CODE = "tulip-7311"


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _message(address: str) -> NewMessage:
    rcpt = NewRecipient(
        address, 1, "access_right", "notification", "A3",
        verification="access_code", access_code=CODE,
    )  # fmt: skip
    return NewMessage("alice@hospital.example", "Lab", b"Subject: Lab\r\n\r\nx\r\n", [rcpt])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    old, new = os.urandom(32), os.urandom(32)
    with tempfile.TemporaryDirectory() as tmp:
        st = SqliteStore.open(tmp, old)
        saved = [st.save_message(_message(f"r{i}@example.net")) for i in range(20)]
        st.close()
        # N recipients' rows like the first one (its hash, under the old key), without paying
        # N scrypt hashes to make them.
        db = sqlite3.connect(os.path.join(tmp, DB_NAME))
        with db:
            db.executemany(
                "INSERT INTO recipients (message_id, address, conversation, method, delivery,"
                " rule, token_hash, verification, access_code_hash) SELECT message_id,"
                " ?, conversation, method, delivery, rule, ?, verification, access_code_hash"
                " FROM recipients WHERE message_id = ? AND address = 'r0@example.net'",
                ((f"x{i}@example.net", f"t{i}", saved[0].id) for i in range(n)),
            )
        db.close()
        ring = SqliteStore.open(tmp, new, previous=[old])
        while ring.rekey_batch(500):
            pass
        ring.close()
        st = SqliteStore.open(tmp, new)
        ids = [r.id for s in saved for r in st.recipients(s.id) if r.address.startswith("r")]
        hashes = {i: st.recipient(i).access_code_hash for i in ids}  # type: ignore[union-attr]
        matches = _median_ms(lambda: st.access_code_matches(hashes[ids[0]], CODE), 5)
        renew = statistics.median(
            _median_ms(lambda i=i: st.prove_access_code(i, hashes[i], CODE), 1) for i in ids[1:]
        )
        print(f"access code proven, hash under the current key:   {matches:8.1f} ms")
        print(f"access code proven under a carried pepper, renewed: {renew:8.1f} ms")
        prune = _median_ms(st.prune_peppers, 5)
        usage = _median_ms(st.key_usage, 3)
        print(f"prune_peppers over {n} recipients:  {prune:8.1f} ms")
        print(f"key_usage over {n} recipients:      {usage:8.1f} ms")
        st.close()


if __name__ == "__main__":
    main()
