"""The pymilter adapter: a thin shell between libmilter and the gateway.

Callbacks only collect what the MTA says (envelope, macros, headers, body into a spool file);
end-of-message hands a `Transaction` to the gateway and applies the `Plan` it returns. No policy
here. Any fault answers tempfail with a log reference, so the MTA keeps the message (SPEC 10).
A message over `milter.max_message_bytes` is no fault but refused for good (core/limits.py):
its spool is thrown away as its count passes the limit, and nothing after that is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import Milter

from zivmilter import defaults, metrics
from zivmilter.core import dkim, limits
from zivmilter.errors import ZivmilterError
from zivmilter.gateway import Gateway, Plan, Transaction
from zivmilter.gateway.transaction import message_id_of
from zivmilter.spool import spool_file

log = logging.getLogger("zivmilter.milter")


def _crlf(text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _field(name: str, value: str) -> bytes:
    """A header field as the spool keeps it (and as it counts towards the message's size)."""
    return name.encode("ascii", "replace") + b":" + _crlf(value) + b"\r\n"


@Milter.header_leading_space
class ZivMilter(Milter.Base):
    """One instance per SMTP connection (libmilter calls the factory per connection)."""

    gateway: Gateway  # set on the class by `serve`
    spool_threshold: int = 1024 * 1024
    max_message_bytes: int = defaults.MAX_MESSAGE_BYTES  # milter.max_message_bytes, by `serve`
    # Causes of a DKIM warning already logged, (domain, listener): once each per process.
    _dkim_warned: ClassVar[set[tuple[str, str]]] = set()
    _dkim_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.client_address: str | None = None
        self.listener: str | None = None
        self.helo: str | None = None
        self.mta: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.sender = ""
        self.recipients: list[str] = []
        self.recipient_params: dict[str, tuple[str, ...]] = {}
        self.headers: list[tuple[str, str]] = []
        self.spool: Any = None
        self.body_offset = 0
        self.fault: str | None = None  # the log reference of a fault while spooling
        self.size = 0  # bytes the MTA passed so far: header fields as spooled, and the body
        self.too_big = False  # over max_message_bytes: nothing more is kept, refused at the end

    # -- collection ----------------------------------------------------------------------
    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        if family in (socket.AF_INET, socket.AF_INET6) and hostaddr:
            self.client_address = str(hostaddr[0])
        self.listener = self.getsymval("{daemon_name}") or None
        self.mta = self.getsymval("v") or None  # "Postfix 3.7.11", or Sendmail's "8.17.1"
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, hostname: str) -> int:
        self.helo = hostname  # SPF's HELO identity and %{h}
        return Milter.CONTINUE

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._close_spool()
        self._reset()
        self.sender = mailfrom
        declared = limits.declared_size(params)
        if declared is not None and declared > self.max_message_bytes:
            # refused before the client sends a byte of it (Postfix's own message_size_limit,
            # when lower, refuses first)
            return self._refuse_too_big(f"SIZE={declared} at MAIL FROM")
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        self.recipients.append(to)
        if params:  # NOTIFY= and ORCPT= (RFC 3461) shape the DSN about a failed recipient
            self.recipient_params[to] = params
        return Milter.CONTINUE

    def data(self) -> int:
        # Answering DATA (instead of negotiating it away) avoids a 40 ms Nagle/delayed-ACK
        # stall per message: see POSTFIX-NOTES.
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        if self._counted(len(_field(name, value))):
            self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> int:
        if not self._counted(2):  # the empty line after the header fields
            return Milter.CONTINUE
        # lives until end of message or abort: closed in _close_spool. Above the threshold the
        # spool is on disk, encrypted under a key only this process holds (spool.py).
        try:
            self.spool = spool_file(self.spool_threshold)
            for name, value in self.headers:
                self.spool.write(_field(name, value))
            self.spool.write(b"\r\n")
            self.body_offset = self.spool.tell()
        except Exception:
            self._spool_fault()
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        # spool None: after a fault, or over max_message_bytes; the rest is not kept
        if self._counted(len(chunk)) and self.spool is not None:
            try:
                self.spool.write(chunk)
            except Exception:
                self._spool_fault()
        return Milter.CONTINUE

    def _counted(self, n: int) -> bool:
        """Counts `n` more bytes of the message; False once it is over max_message_bytes. Then
        what was spooled is thrown away and nothing more is kept (in memory or on disk): the
        end of data refuses the message (the callbacks before it cannot answer)."""
        self.size += n
        if not self.too_big and self.size > self.max_message_bytes:
            self.too_big = True
            self._close_spool()
        return not self.too_big

    def _refuse_too_big(self, why: str) -> int:
        """A permanent refusal (552 5.3.4) of a message over max_message_bytes: not a fault but
        the message itself, the same at every try (limits.py). One log line, nothing kept."""
        reply = limits.too_big(self.max_message_bytes)
        log.info(
            "refused: %s: %s",
            reply,
            why,
            extra={
                "queue_id": self.getsymval("i") or "-",
                "message_id": message_id_of(self.headers),
            },
        )
        code, status, text = reply.split(" ", 2)
        self.setreply(code, status, text)
        self._close_spool()
        return Milter.REJECT

    def _spool_fault(self) -> None:
        """A fault while spooling (the temporary folder full or failing): logged now, answered
        with tempfail at end-of-message. Raised out of a callback the MTA wants no reply to,
        it made libmilter drop the rest of the message unanswered: the client waited for the
        MTA's milter timeout (Postfix: 300 s), then got a 4xx without our reference."""
        self.fault = secrets.token_hex(4)
        queue_id = self.getsymval("i") or "-"
        log.exception(
            "spooling the message failed; tempfail at its end, ref %s",
            self.fault,
            extra={"queue_id": queue_id, "message_id": "-"},
        )
        self._close_spool()

    # -- decision --------------------------------------------------------------------------
    def eom(self) -> int:
        queue_id = self.getsymval("i") or "-"
        started = time.monotonic()
        if self.too_big:  # never spooled whole: never handled, nothing stored or sent
            metrics.message("refused", started)
            return self._refuse_too_big(f"{self.size} bytes passed")
        if self.spool is None and self.fault is None:
            self.eoh()  # a message without headers still has an end of headers
        if self.fault is not None:  # the message was not spooled whole: never handled
            metrics.message("tempfail", started)
            self.setreply(
                "451", "4.3.0", f"zivmilter: temporary failure, ref {self.fault}; try again later"
            )
            return Milter.TEMPFAIL
        tx = Transaction(
            queue_id=queue_id,
            sender=self.sender,
            recipients=list(self.recipients),
            recipient_params=dict(self.recipient_params),
            headers=[(n, v.removeprefix(" ")) for n, v in self.headers],
            message=self.spool,
            body_offset=self.body_offset,
            client_address=self.client_address,
            auth_login=self.getsymval("{auth_authen}") or None,
            listener=self.listener,
            helo=self.helo,
            mta=self.mta,
        )
        extra = {"queue_id": queue_id, "message_id": tx.message_id}
        try:
            plan = self.gateway.process(tx)
            if plan.reject is not None:
                code, status, text = plan.reject.split(" ", 2)
                # libmilter reads the text printf-style: a lone % would lose the whole reply
                self.setreply(code, status, text.replace("%", "%%"))
                log.info("refused: %s", plan.reject, extra=extra)
                metrics.message("tempfail" if code.startswith("4") else "refused", started)
                return Milter.TEMPFAIL if code.startswith("4") else Milter.REJECT
            self._warn_signed_before(tx, plan, extra)
            self._apply(plan)
        except Exception:
            ref = secrets.token_hex(4)
            log.exception("tempfail, ref %s", ref, extra=extra)
            metrics.message("tempfail", started)
            self.setreply(
                "451", "4.3.0", f"zivmilter: temporary failure, ref {ref}; try again later"
            )
            return Milter.TEMPFAIL
        finally:
            if tx.message is not self.spool:
                tx.message.close()  # the gateway swapped in a rewritten copy
            self._close_spool()
        log.info("done: %s", plan.summary, extra=extra)
        metrics.message("secured" if plan.selected else "passed", started)
        return Milter.DISCARD if plan.discard else Milter.ACCEPT

    def _apply(self, plan: Plan) -> None:
        # Delete from the highest index down: later occurrences keep their numbers meanwhile.
        for name, index in sorted(plan.delete_headers, key=lambda d: (d[0].lower(), -d[1])):
            self.chgheader(name, index, "")
        for name, index, value in plan.change_headers:
            self.chgheader(name, index, self._wire_value(value))
        for name, value in plan.add_headers:
            self.addheader(name, self._wire_value(value))
        if plan.replace_body is not None:
            body = plan.replace_body
            for start in range(0, len(body), 65536):
                self.replacebody(body[start : start + 65536])
            if not body:
                self.replacebody(b"")
        for rcpt in plan.delete_recipients:
            self.delrcpt(rcpt)

    def _warn_signed_before(self, tx: Transaction, plan: Plan, extra: dict[str, Any]) -> None:
        """A signer listed before zivmilter is not silent (issue 23): Postfix shows us its
        DKIM-Signature, which our rewrite breaks. Logged once per domain and listener."""
        rewrites = plan.replace_body is not None or bool(plan.delete_headers or plan.change_headers)
        own = self.gateway.cfg.organization.domains
        for domain in dkim.signed_before_rewrite(tx.headers, own, rewrites):
            cause = (domain, self.listener or "-")
            with self._dkim_lock:
                if cause in self._dkim_warned:
                    continue
                self._dkim_warned.add(cause)
            log.warning(
                "the message carried a DKIM-Signature of %s before zivmilter rewrote it, so it"
                " leaves without a valid one: %s",
                domain,
                dkim.FIX,
                extra=extra,
            )

    def _wire_value(self, value: str) -> str:
        """A plan's header value as the MTA wants it. With P_HDR_LEADSPC negotiated (the class
        decorator) the MTA writes `name:value` exactly as given, as it hands over the values it
        read (whose leading space eom() takes off): the usual space after the colon is ours to
        give, or the field goes out as `Content-Type:multipart/alternative` (Postfix) or
        `Date:Mon, ...` (Sendmail). A value that already starts with white space keeps it."""
        if self._protocol & Milter.P_HDR_LEADSPC and value[:1] not in (" ", "\t"):
            return " " + value
        return value

    def abort(self) -> int:
        self._close_spool()
        self._reset()
        return Milter.CONTINUE

    def close(self) -> int:
        self._close_spool()
        return Milter.CONTINUE

    def _close_spool(self) -> None:
        spool, self.spool = self.spool, None
        if spool is not None:
            # thrown away: a write that failed before (a full disk) fails the close's flush too
            with contextlib.suppress(OSError):
                spool.close()


def _tune_listening_sockets() -> int:
    """TCP_NODELAY on libmilter's listening TCP socket (accepted sockets inherit it on Linux).

    libmilter writes several replies at end-of-message; with Nagle on, each message stalls ~40 ms
    against Postfix's delayed ACK (POSTFIX-NOTES). libmilter offers no hook, so the option is set
    on its listening descriptor, found in /proc/self/fd.
    """
    tuned = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_ACCEPTCONN
            ):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tuned += 1
        finally:
            sock.close()
    return tuned


def _someone_listens(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _why_not(socket_spec: str) -> str:
    """Why libmilter could not open its socket: it only says that it could not."""
    kind, _, rest = socket_spec.partition(":")
    try:
        if kind in ("inet", "inet6"):
            port, _, host = rest.partition("@")
            family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host or ("::" if kind == "inet6" else "0.0.0.0"), int(port)))
        else:
            path = rest if kind in ("unix", "local") else socket_spec
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.bind(path)
            os.unlink(path)
    except (OSError, ValueError) as exc:
        return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
    return "libmilter gave no reason"


def listen(name: str, socket_spec: str, timeout: int, *, tcp_nodelay: bool = True) -> None:
    """Register with libmilter and open its socket, as Milter.runmilter does, but split before
    main() so the listening socket can be tuned (TCP_NODELAY); `Milter.factory` must be set."""
    import milter  # pymilter's C module

    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    milter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    milter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    milter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    milter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    milter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    milter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    milter.set_close_callback(Milter.close_callback)
    unix = socket_spec.startswith(("unix:", "local:"))
    if unix:
        path = socket_spec.split(":", 1)[1]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # libmilter removes a socket file it finds: a second instance would silently take the
        # socket from one that is running (which then never hears from the MTA again).
        if _someone_listens(path):
            raise ZivmilterError(
                f"milter.socket {socket_spec}: another milter is listening there; stop it first"
            )
    milter.setconn(socket_spec)
    milter.settimeout(timeout)
    milter.register(
        name,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )
    try:
        milter.opensocket(True)
    except milter.error:
        raise ZivmilterError(
            f"milter.socket {socket_spec}: cannot listen ({_why_not(socket_spec)})"
        ) from None
    if unix:
        os.chmod(socket_spec.split(":", 1)[1], 0o660)  # Postfix (group) may connect, nobody else
    elif tcp_nodelay and _tune_listening_sockets() == 0:
        raise OSError(f"no TCP listening socket to tune for {socket_spec}")


def serve(
    gateway: Gateway,
    socket_spec: str,
    timeout: int,
    spool_threshold: int,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run the milter until stopped (SIGTERM/SIGINT handled by libmilter)."""
    import milter  # pymilter's C module

    ZivMilter.gateway = gateway
    ZivMilter.spool_threshold = spool_threshold
    ZivMilter.max_message_bytes = gateway.cfg.milter.max_message_bytes
    Milter.factory = ZivMilter
    listen("zivmilter", socket_spec, timeout)
    log.info("listening on %s", socket_spec, extra={"queue_id": "-", "message_id": "-"})
    if ready is not None:
        ready()
    milter.main()
