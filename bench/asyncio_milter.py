"""The milters of bench/noop_milter.py on one asyncio event loop, for bench/throughput.sh only.

No libmilter, no pymilter, no thread per connection: one event loop speaks Sendmail's milter
protocol (version 6, as libmilter and Postfix's milter8.c speak it) to every MTA connection, so
the b/b1/b2 cases against their -async twins measure what libmilter's threads and pymilter's glue
cost. Each mode negotiates exactly the protocol steps its pymilter twin does (the steps a twin
takes with @noreply go without reply, the others are skipped), asks for no macros (the MTA's
milter_*_macros decide, as for zivmilter) and answers end-of-message as its twin does:

  --noop     accept (bench/noop_milter.py's tuned milter: DATA answered, TCP_NODELAY);
  --rewrite  every callback collected, then Subject changed, two headers added, body replaced;
  --store DIR  --rewrite, plus the message sealed (AES-256-GCM, a fresh key) and committed
             durably before the accept, one row per message, through zivmilter's group commit
             (SqliteBase._write_batch: one transaction and one fsync per batch of waiting saves).
             The writer thread hands each batch back to the loop with one wake-up; with
             --executor instead every save waits in a thread pool on SqliteBase._commit_grouped
             unchanged (run_in_executor: the shape a product would take with today's store).

--zivmilter-flags negotiates zivmilter's own protocol steps instead of the twin's (connect and
HELO delivered without reply, leading spaces of header values kept), --uvloop runs the loop on
uvloop. Not product code: a save that fails answers tempfail, any other fault (a packet it
cannot parse) closes the connection, and Postfix then applies milter_default_action.
Checked against Postfix 3.7 through a logging proxy: each mode's negotiation, macros, command
sequence and replies match its twin's byte for byte, and so does the message at the sink.

    python bench/asyncio_milter.py inet:9901@127.0.0.1 [--noop | --rewrite | --store DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# Protocol steps (SMFIP_*) as libmilter and Postfix number them.
NOCONNECT, NOHELO, NOMAIL, NORCPT, NOBODY, NOHDRS, NOEOH = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40
NR_HDR, NOUNKNOWN, NODATA, SKIP, RCPT_REJ = 0x80, 0x100, 0x200, 0x400, 0x800
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT, NR_DATA = 0x1000, 0x2000, 0x4000, 0x8000, 0x10000
NR_UNKN, NR_EOH, NR_BODY, HDR_LEADSPC = 0x20000, 0x40000, 0x80000, 0x100000

# What each mode turns off of the MTA's offer: pymilter's protocol_mask() of its twin class
# (noop_milter.TunedNoop, noop_milter.Rewrite and .Store, zivmilter.mta.milter.ZivMilter).
MASK_NOOP = 0x1FFA80
MASK_REWRITE = 0x137A7C
MASK_ZIVMILTER = 0x34A7F

# A command's reply is skipped when its NR_ step was negotiated.
NO_REPLY = {
    ord("C"): NR_CONN, ord("H"): NR_HELO, ord("M"): NR_MAIL, ord("R"): NR_RCPT,
    ord("T"): NR_DATA, ord("U"): NR_UNKN, ord("L"): NR_HDR, ord("N"): NR_EOH, ord("B"): NR_BODY,
}  # fmt: skip

_LEN = struct.Struct("!I")
_CONTINUE = b"\0\0\0\x01c"
_ACCEPT = b"\0\0\0\x01a"
_TEXT = b"A secure message is waiting for you: https://secure.example/m/0123456789abcdef\r\n" * 25


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    return _LEN.pack(len(data) + 1) + cmd + data


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # as pymilter hands strings to Python


class Saver:
    """Commits (id, sealed) rows durably; `save` returns an awaitable done once committed."""

    def __init__(self, folder: str, loop: asyncio.AbstractEventLoop, executor: bool) -> None:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
        from zivmilter.store.blobs import FileBlobStore
        from zivmilter.store.sqlite.connection import SqliteBase, _Pending, connect

        conn = connect(folder)
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id BLOB PRIMARY KEY, data BLOB)")
        self.base = SqliteBase(folder, None, conn, FileBlobStore(folder), time.time, 0)  # type: ignore[arg-type]
        self.pending = _Pending
        self.loop = loop
        self.pool = ThreadPoolExecutor(64, "saver") if executor else None
        self.queued: list[tuple[object, asyncio.Future[None]]] = []
        self.ready = threading.Condition()
        self.batches = [0, 0]
        if not executor:
            threading.Thread(target=self._write, name="writer", daemon=True).start()

    @staticmethod
    def _insert(row: tuple[bytes, bytes]) -> Callable[[object], None]:
        return lambda cur: cur.execute("INSERT INTO floor VALUES (?, ?)", row)  # type: ignore[attr-defined]

    def save(self, row: tuple[bytes, bytes]) -> asyncio.Future[None]:
        if self.pool is not None:  # a pool thread blocks on the store's own group commit
            return self.loop.run_in_executor(
                self.pool, self.base._commit_grouped, self._insert(row)
            )
        done = self.loop.create_future()
        with self.ready:
            self.queued.append((self.pending(self._insert(row)), done))
            self.ready.notify()
        return done

    def _write(self) -> None:
        """The writer thread: every save queued meanwhile in one transaction (the store's own
        _write_batch), then one call into the loop that wakes the whole batch's connections."""
        while True:
            with self.ready:
                while not self.queued:
                    self.ready.wait()
                batch, self.queued = self.queued, []
            with self.base._lock:
                self.base._write_batch([job for job, _ in batch])  # type: ignore[misc]
            self.batches[0] += 1
            self.batches[1] += len(batch)
            self.loop.call_soon_threadsafe(self._wake, batch)

    @staticmethod
    def _wake(batch: list[tuple[object, asyncio.Future[None]]]) -> None:
        for job, done in batch:
            error = job.error  # type: ignore[attr-defined]
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


class Milter(asyncio.Protocol):
    """One MTA connection. Packets are parsed from one buffer; replies go out in one write."""

    mode = "noop"
    mask = MASK_NOOP
    saver: Saver | None = None

    def __init__(self) -> None:
        self.buf = bytearray()
        self.busy = False  # an end-of-message waits for its commit: parse nothing more
        self.steps = 0
        self.macros: dict[int, dict[bytes, bytes]] = {}
        self.client: tuple[str, str] | None = None
        self.helo = ""
        self._reset()

    def _reset(self) -> None:
        self.sender = ""
        self.recipients: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.content = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._parse()

    def _parse(self) -> None:
        buf, pos, out = self.buf, 0, list[bytes]()
        try:
            while len(buf) - pos >= 5:
                size = _LEN.unpack_from(buf, pos)[0]
                end = pos + 4 + size
                if len(buf) < end:
                    break
                cmd, data = buf[pos + 4], bytes(buf[pos + 5 : end])
                pos = end
                if cmd == 69:  # "E": end of message
                    if data:
                        self.content += data
                    if self.saver is not None:
                        self.busy = True
                        asyncio.get_running_loop().create_task(self._eom_stored(out))
                        return
                    out.append(self._eom())
                    continue
                if cmd == 81:  # "Q": the MTA is done with this connection
                    self.transport.close()
                    break
                reply = self._command(cmd, data)
                if reply is not None:
                    out.append(reply)
        except Exception as exc:  # a bench: say so and drop the connection
            print(f"asyncio_milter: {exc!r}", file=sys.stderr)
            self.transport.close()
            return
        finally:
            del buf[:pos]
            if out and not self.busy:
                self.transport.write(b"".join(out))

    def _command(self, cmd: int, data: bytes) -> bytes | None:
        if cmd == 68:  # "D": macros for the next command
            fields = data[1:].split(b"\0")
            self.macros[data[0]] = dict(zip(fields[0::2], fields[1::2], strict=False))
            return None
        if cmd == 79:  # "O": negotiation
            version, actions, offered = struct.unpack_from("!III", data)
            self.steps = offered & ~self.mask
            return packet(b"O", struct.pack("!III", min(version, 6), actions, self.steps))
        if cmd in (65, 75):  # "A" abort, "K" next connection on this socket: forget the message
            self._reset()
            return None
        if self.mode != "noop":
            if cmd == 76:  # "L": header
                name, value, _ = data.split(b"\0", 2)
                self.headers.append((_text(name), _text(value)))
            elif cmd == 66:  # "B": body chunk
                self.content += data
            elif cmd == 77:  # "M": MAIL FROM and its parameters
                self._reset()
                self.sender = _text(data.split(b"\0", 1)[0])
            elif cmd == 82:  # "R"
                self.recipients.append(_text(data.split(b"\0", 1)[0]))
            elif cmd == 67:  # "C": host name, family, port, address
                host, rest = data.split(b"\0", 1)
                self.client = (_text(host), _text(rest[3:].rstrip(b"\0")))
            elif cmd == 72:  # "H"
                self.helo = _text(data.rstrip(b"\0"))
        return None if self.steps & NO_REPLY.get(cmd, 0) else _CONTINUE

    def _eom(self) -> bytes:
        if self.mode == "noop":
            return _ACCEPT
        lead = " " if self.steps & HDR_LEADSPC else ""
        return b"".join(
            (
                packet(b"m", b"\0\0\0\x01Subject\0" + f"{lead}Secure message".encode() + b"\0"),
                packet(b"h", f"X-Rewritten\0{lead}1\0".encode()),
                packet(b"h", f"MIME-Version\0{lead}1.0\0".encode()),
                packet(b"b", _TEXT),  # < 65,535 bytes: one chunk
                _ACCEPT,
            )
        )

    async def _eom_stored(self, out: list[bytes]) -> None:
        try:
            head = "".join(f"{n}: {v}\r\n" for n, v in self.headers).encode("utf-8", "replace")
            key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
            sealed = AESGCM(key).encrypt(nonce, head + b"\r\n" + bytes(self.content), None)
            assert self.saver is not None
            await self.saver.save((os.urandom(16), nonce + sealed))
            out.append(self._eom())
        except Exception as exc:
            out.append(packet(b"t"))  # not stored: the MTA keeps the message
            print(f"asyncio_milter: {exc!r}", file=sys.stderr)
        self.transport.write(b"".join(out))
        self.busy = False
        self._parse()


def serve(spec: str) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        kind, _, where = spec.partition(":")
        if kind in ("unix", "local"):
            server = await loop.create_unix_server(Milter, where, backlog=128)
        else:  # libmilter's inet:PORT@HOST; asyncio sets TCP_NODELAY on TCP connections
            port, _, host = where.partition("@")
            server = await loop.create_server(Milter, host or "127.0.0.1", int(port), backlog=128)
        if Milter.saver is not None:
            Milter.saver.loop = loop
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description="an asyncio milter for bench/throughput.sh")
    parser.add_argument("socket", help="libmilter's spelling, e.g. inet:9901@127.0.0.1")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--noop", action="store_true", help="accept (the default)")
    kind.add_argument("--rewrite", action="store_true", help="take every callback, rewrite")
    kind.add_argument("--store", metavar="DIR", help="--rewrite + seal + durable commit")
    parser.add_argument("--executor", action="store_true", help="--store: saves in a pool")
    parser.add_argument("--zivmilter-flags", action="store_true", help="zivmilter's steps")
    parser.add_argument("--uvloop", action="store_true", help="run the loop on uvloop")
    args = parser.parse_args()
    if args.rewrite or args.store:
        Milter.mode, Milter.mask = "rewrite", MASK_REWRITE
    if args.zivmilter_flags:
        Milter.mode, Milter.mask = "rewrite", MASK_ZIVMILTER
    if args.store:
        # The loop is set when it runs; saves only come from inside it.
        Milter.saver = Saver(args.store, None, args.executor)  # type: ignore[arg-type]
    if args.uvloop:
        import uvloop

        uvloop.install()
    serve(args.socket)


if __name__ == "__main__":
    main()
