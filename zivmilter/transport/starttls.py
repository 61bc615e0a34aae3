"""One SMTP connection to one MX address: greeting, EHLO, STARTTLS, TLS handshake, QUIT.

The first handshake verifies the chain against the configured CAs and the MX host name (python's
ssl, verification on). Only when that fails does a second one, with verification off, fetch the
chain for DANE-EE and self-signed reporting; a third, permissive one runs only to name the old
protocol a server is stuck on. Every outcome is a `TlsResult`; probe.py is the only caller.
"""

from __future__ import annotations

import _ssl
import contextlib
import functools
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zivmilter.transport.model import TlsResult

_MAX_LINE = 4096
_MAX_LINES = 200


class _Failed(Exception):
    """Ends one dialog early; always turned into a TlsResult below, never leaves this module."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Dialog:
    """Minimal SMTP client side on a plain socket, each step bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: float, step: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.step = step
        self.buf = b""

    def arm(self) -> None:
        left = min(self.step, self.deadline - time.monotonic())
        if left <= 0:
            raise _Failed("time budget exhausted")
        self.sock.settimeout(left)

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > _MAX_LINE:
                raise _Failed("reply line too long")
            self.arm()
            chunk = self.sock.recv(4096)
            if not chunk:
                raise _Failed("server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while len(lines) < _MAX_LINES:
            raw = self._line()
            text = raw.decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit():
                raise _Failed(f"not an SMTP reply: {text[:80]!r}")
            lines.append(text[4:])
            if text[3:4] != "-":
                return int(text[:3]), lines
        raise _Failed("reply has too many lines")

    def send(self, command: str) -> None:
        self.arm()
        self.sock.sendall(command.encode("ascii") + b"\r\n")


def _presented_chain(tls: ssl.SSLSocket) -> tuple[bytes, ...]:
    """DER certificates as the server sent them, leaf first.

    Python 3.13 has SSLSocket.get_unverified_chain(); 3.10-3.12 have the same method on the
    underlying _ssl object only. Without either, the leaf alone (enough for DANE-EE).
    """
    getter: Callable[[], Any] | None = getattr(tls, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        leaf = tls.getpeercert(binary_form=True)
        return (leaf,) if leaf else ()
    out = []
    for cert in getter() or ():
        out.append(cert if isinstance(cert, bytes) else cert.public_bytes(_ssl.ENCODING_DER))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _verifying_context(ca_file: str | None) -> ssl.SSLContext:
    # Cached: loading a trust store costs milliseconds; a context is safe to share by threads.
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@functools.lru_cache(maxsize=2)
def _unverified_context(legacy: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # chain fetched for DANE/reporting; never used for PKIX
    if legacy:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 at higher levels
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass
class _Attempt:
    connected: bool = False
    starttls: bool = False
    version: str | None = None
    chain: tuple[bytes, ...] = ()
    error: str | None = None
    verify_error: str | None = None


def _attempt(
    address: str, host: str, port: int, ctx: ssl.SSLContext, ehlo: str, deadline: float, step: float
) -> _Attempt:
    out = _Attempt()
    left = min(step, deadline - time.monotonic())
    if left <= 0:
        out.error = "time budget exhausted"
        return out
    try:
        sock = socket.create_connection((address, port), timeout=left)
    except OSError as exc:
        out.error = f"connect to {address} port {port}: {_os_error(exc)}"
        return out
    out.connected = True
    try:
        dialog = _Dialog(sock, deadline, step)
        code, lines = dialog.reply()
        if code != 220:
            raise _Failed(f"greeting refused: {code} {' '.join(lines)[:120]}")
        dialog.send(f"EHLO {ehlo}")
        code, lines = dialog.reply()
        if code != 250:
            raise _Failed(f"EHLO refused: {code} {' '.join(lines)[:120]}")
        if not any(line.split(" ", 1)[0].upper() == "STARTTLS" for line in lines):
            raise _Failed("STARTTLS not offered")
        out.starttls = True
        dialog.send("STARTTLS")
        code, lines = dialog.reply()
        if code != 220:
            raise _Failed(f"STARTTLS refused: {code} {' '.join(lines)[:120]}")
        if dialog.buf:
            raise _Failed("server sent data before the TLS handshake")
        dialog.arm()
        tls = ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        sock = tls
        tls.do_handshake()
        out.version = tls.version()
        out.chain = _presented_chain(tls)
        dialog.sock = tls
        with contextlib.suppress(OSError, _Failed):
            dialog.send("QUIT")
    except ssl.SSLCertVerificationError as exc:
        out.verify_error = exc.verify_message or str(exc)
    except ssl.SSLError as exc:
        out.error = f"TLS handshake failed: {exc.reason or exc}"
    except _Failed as exc:
        out.error = exc.reason
    except OSError as exc:
        out.error = f"{address} port {port}: {_os_error(exc)}"
    finally:
        sock.close()
    return out


def _os_error(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def probe_address(
    address: str,
    host: str,
    port: int,
    *,
    ca_file: str | None,
    ehlo: str,
    deadline: float,
    step: float,
) -> TlsResult:
    """STARTTLS to `address` as MX host `host`: PKIX verdict, TLS version, presented chain."""
    first = _attempt(address, host, port, _verifying_context(ca_file), ehlo, deadline, step)
    if first.version is not None:
        return TlsResult(address, True, True, first.version, True, None, first.chain)
    if not first.starttls:
        return TlsResult(address, first.connected, False, error=first.error)
    pkix_error = first.verify_error or first.error
    second = _attempt(address, host, port, _unverified_context(False), ehlo, deadline, step)
    if second.version is not None:
        return TlsResult(address, True, True, second.version, False, pkix_error, second.chain)
    third = _attempt(address, host, port, _unverified_context(True), ehlo, deadline, step)
    if third.version in ("TLSv1.2", "TLSv1.3"):
        # Only OpenSSL's security level 0 gets through: keys or ciphers too weak to count.
        why = f"{third.version} only with weak keys or ciphers (OpenSSL security level 0)"
        return TlsResult(address, True, True, None, False, pkix_error, third.chain, why)
    if third.version is not None:
        why = f"only {third.version} offered; TLS 1.2 or later is required"
        return TlsResult(address, True, True, third.version, False, pkix_error, third.chain, why)
    return TlsResult(address, True, True, None, False, pkix_error, (), second.error or third.error)
