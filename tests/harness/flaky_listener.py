"""A re-injection listener that misbehaves on cue: a tiny SMTP server on a real socket.

For each message it takes (counted from 0 over the listener's life) `answer(n)` says what
happens at the final ".": "250" (queued), "452"/"554" (refused) or "drop" (the connection is
closed without a reply, after the whole message arrived: what a Postfix reload, an smtpd crash
or a reply slower than the client's timeout look like to the client). Messages answered 250 or
dropped are kept in `received` (a dropped one may well have been queued by a real MTA).

pipelining=True offers PIPELINING (RFC 2920) and holds the replies to MAIL and RCPT back until
DATA arrives, as a server may: a client that waits for each reply instead of pipelining never
gets one (its timeout fails the test). `refuse_rcpt(address)` may answer a RCPT with a refusal
("450 ...") instead of 250. `sessions` counts the connections taken.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Taken:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    dropped: bool  # the client got no reply


class FlakyListener:
    def __init__(
        self,
        host: str,
        port: int,
        answer: Callable[[int], str],
        *,
        pipelining: bool = False,
        refuse_rcpt: Callable[[str], str | None] = lambda address: None,
    ) -> None:
        self.host, self.port, self.answer = host, port, answer
        self.pipelining, self.refuse_rcpt = pipelining, refuse_rcpt
        self.received: list[Taken] = []
        self.sessions = 0
        self._count = 0
        self._lock = threading.Lock()
        self._server = socket.create_server((host, port), reuse_port=False)
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FlakyListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Wake the accept at once (on Linux a shut-down listening socket fails it) rather than
        # after its poll interval: each test would otherwise wait that out at its end.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with self._lock:
            self.sessions += 1
        held: list[bytes] = []  # replies to a pipelined MAIL and RCPT, sent with DATA's
        with conn, conn.makefile("rb") as rfile:

            def say(line: str, hold: bool = False) -> None:
                held.append(line.encode() + b"\r\n")
                if not (hold and self.pipelining):
                    conn.sendall(b"".join(held))
                    held.clear()

            say("220 flaky.test ESMTP")
            sender, rcpts = "", list[str]()
            while True:
                try:
                    line = rfile.readline()
                except ConnectionResetError:  # the client was killed mid-session (the tests do)
                    return
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    say("250-flaky.test")
                    say("250-8BITMIME")
                    if self.pipelining:
                        say("250-PIPELINING")
                    say("250 SMTPUTF8")
                elif verb == b"MAIL":
                    sender = line[10:].strip().split(b" ")[0].decode(errors="replace")
                    rcpts = []
                    say("250 2.1.0 Ok", hold=True)
                elif verb == b"RCPT":
                    rcpt = line[8:].strip().split(b" ")[0].decode(errors="replace")
                    refusal = self.refuse_rcpt(rcpt.strip("<>"))
                    if refusal is None:
                        rcpts.append(rcpt)
                    say(refusal or "250 2.1.5 Ok", hold=True)
                elif verb == b"DATA":
                    if not rcpts:
                        say("554 5.5.1 Error: no valid recipients")
                        continue
                    say("354 End data with <CR><LF>.<CR><LF>")
                    data = b""
                    while True:
                        piece = rfile.readline()
                        if not piece:
                            return
                        if piece == b".\r\n":
                            break
                        data += piece[1:] if piece.startswith(b"..") else piece
                    with self._lock:
                        n, self._count = self._count, self._count + 1
                    what = self.answer(n)
                    if what in ("250", "drop"):
                        bare = tuple(r.strip("<>") for r in rcpts)
                        with self._lock:
                            self.received.append(
                                Taken(sender.strip("<>"), bare, data, what == "drop")
                            )
                    if what == "drop":
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    if what == "250":
                        say("250 2.0.0 Ok: queued as FLAKY")
                    else:
                        say(f"{what} refused by flaky.test")
                elif verb == b"RSET":
                    say("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Error: command not recognized")
