"""A milter that changes nothing, for bench/throughput.sh: what the milter round trips alone cost.

By default it carries the TCP fix of POSTFIX-NOTES ("the 40 ms trap"): TCP_NODELAY on the
listening socket and an answered `data` callback, registered exactly as zivmilter registers
(zivmilter.milter.listen). --stock runs pymilter's callbacks as shipped, for contrast.
--rewrite is the floor of any rewriting milter in Python: it takes every callback (envelope,
headers, body) and at the end replaces the body with a 2 KB text and edits three headers, with
no policy, store or crypto. --store DIR is the floor of any milter that secures mail as SPEC 10
asks: --rewrite, plus at end-of-message the message encrypted (AES-256-GCM, a fresh key) and
committed durably (SQLite WAL, synchronous=FULL, zivmilter's own group commit: one writer
thread, one fsync per batch of concurrent messages) before it accepts; one row per message, no
policy, no notification to build.

    python bench/noop_milter.py inet:9901@127.0.0.1 [--stock | --rewrite | --store DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import Milter
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from zivmilter.mta.milter import listen
from zivmilter.store.blobs import FileBlobStore
from zivmilter.store.sqlite.connection import SqliteBase, connect


class TunedNoop(Milter.Base):  # type: ignore[misc]
    # Not @nocallback: Postfix then waits for this reply after the DATA macros, instead of
    # stalling at end-of-message behind Nagle and the milter's delayed ACK.
    def data(self) -> int:
        return int(Milter.CONTINUE)

    def eom(self) -> int:
        return int(Milter.ACCEPT)


_TEXT = b"A secure message is waiting for you: https://secure.example/m/0123456789abcdef\r\n" * 25


class Rewrite(TunedNoop):
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.headers: list[tuple[str, str]] = []
        self.content = bytearray()
        return int(Milter.CONTINUE)

    @Milter.noreply  # type: ignore[misc]
    def envrcpt(self, to: str, *params: str) -> int:
        return int(Milter.CONTINUE)

    @Milter.noreply  # type: ignore[misc]
    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        return int(Milter.CONTINUE)

    @Milter.noreply  # type: ignore[misc]
    def eoh(self) -> int:
        return int(Milter.CONTINUE)

    @Milter.noreply  # type: ignore[misc]
    def body(self, chunk: bytes) -> int:
        self.content += chunk
        return int(Milter.CONTINUE)

    def eom(self) -> int:
        self.chgheader("Subject", 1, "Secure message")
        self.addheader("X-Rewritten", "1")
        self.addheader("MIME-Version", "1.0")
        self.replacebody(_TEXT)
        return int(Milter.ACCEPT)


class _GroupCommit:
    """zivmilter's own group commit (store/sqlite/connection.py: one writer thread, one fsync
    per batch of concurrent saves) over a table of one row per message, so that the floor
    commits as zivmilter does."""

    def __init__(self, folder: str) -> None:
        conn = connect(folder)
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id BLOB PRIMARY KEY, data BLOB)")
        self.base = SqliteBase(folder, None, conn, FileBlobStore(folder), time.time, 0)  # type: ignore[arg-type]

    def save(self, row: tuple[bytes, bytes]) -> None:
        self.base._commit_grouped(lambda cur: cur.execute("INSERT INTO floor VALUES (?, ?)", row))


class Store(Rewrite):
    store: _GroupCommit

    def eom(self) -> int:
        head = "".join(f"{n}: {v}\r\n" for n, v in self.headers).encode("utf-8", "replace")
        key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, head + b"\r\n" + bytes(self.content), None)
        self.store.save((os.urandom(16), nonce + sealed))
        return super().eom()


class StockNoop(Milter.Base):  # type: ignore[misc]
    def eom(self) -> int:
        return int(Milter.ACCEPT)


def serve(spec: str, *, stock: bool, rewrite: bool = False, store: str | None = None) -> None:
    import milter  # pymilter's C module

    Milter.factory = StockNoop if stock else Rewrite if rewrite else TunedNoop
    if store is not None:
        Store.store = _GroupCommit(store)
        Milter.factory = Store
    listen("noop", spec, 60, tcp_nodelay=not stock)  # the same registration as zivmilter's
    milter.main()


def main() -> None:
    parser = argparse.ArgumentParser(description="a no-op milter for bench/throughput.sh")
    parser.add_argument("socket", help="libmilter socket, e.g. inet:9901@127.0.0.1")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--stock", action="store_true", help="without the TCP fix")
    kind.add_argument("--rewrite", action="store_true", help="take every callback, rewrite")
    kind.add_argument("--store", metavar="DIR", help="--rewrite + encrypt + durable commit")
    args = parser.parse_args()
    serve(args.socket, stock=args.stock, rewrite=args.rewrite, store=args.store)


if __name__ == "__main__":
    main()
