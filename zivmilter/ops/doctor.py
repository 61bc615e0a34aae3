"""`zivmilter doctor`: gather the facts of a live installation and judge them.

Postfix's settings (with Sendmail in front: the relay Postfix's, and sendmail.cf's text) come
from postconf and its tables answer through postmap (so the checks see
exactly what Postfix sees, defaults and `$name` expansion included); checks.py judges them. The
live parts are probed here, each by a small function returning one `Check`: a milter
negotiation on the milter socket, an SMTP dialogue (without DATA) with the re-injection listener,
opening the store with its key, a DNSSEC query to the configured resolver, the portal's /healthz.
"""

from __future__ import annotations

import os
import smtplib
import socket
import stat
import struct
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from zivmilter.core.config import Config
from zivmilter.errors import ZivmilterError
from zivmilter.ops.checks import (
    Check,
    Lookup,
    PostfixView,
    Service,
    postfix_checks,
    relay_checks,
)
from zivmilter.ops.sendmail import SendmailView, parse_sendmail_cf, sendmail_checks

# main.cf parameters the checks read (postconf prints their effective values, defaults too).
MAIN_PARAMETERS = (
    "smtpd_milters",
    "non_smtpd_milters",
    "milter_default_action",
    "milter_connect_macros",
    "milter_mail_macros",
    "milter_rcpt_macros",
    "milter_end_of_data_macros",
    "milter_header_checks",
    "header_checks",
    "smtp_header_checks",
    "smtp_tls_security_level",
    "smtp_tls_mandatory_protocols",
    "smtp_tls_policy_maps",
    "smtp_tls_per_site",
    "smtp_fallback_relay",
    "smtp_dns_support_level",
    "receive_override_options",
    "cleanup_service_name",
)

# Milter protocol (libmilter's mfdef.h): a packet is a 4-byte length, a command byte, data.
_SMFIC_OPTNEG = b"O"
_SMFIC_QUIT = b"Q"
_MILTER_VERSION = 6
_ALL_ACTIONS = 0x1FF
_ALL_PROTOCOL_STEPS = 0x1FFFFF

DEFAULT_DNSSEC_NAME = "."  # the root zone: signed, and known to every validating resolver


class PostconfError(ZivmilterError):
    """postconf could not read the Postfix configuration (no Postfix, wrong folder)."""


class SendmailConfigError(ZivmilterError):
    """The sendmail.cf to check cannot be read."""


@dataclass(frozen=True)
class DoctorOptions:
    postfix_dir: str = "/etc/postfix"  # with Sendmail: the relay Postfix's
    sendmail_cf: str | None = None  # Sendmail in front: its built sendmail.cf
    dnssec_name: str = DEFAULT_DNSSEC_NAME
    timeout: float = 5.0


# --- Postfix, read through its own tools ------------------------------------------------------


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise PostconfError(f"{args[0]}: not found (is Postfix installed?)") from None


def read_postfix(config_dir: str) -> PostfixView:
    done = _run(["postconf", "-c", config_dir, "-x", *MAIN_PARAMETERS])
    if done.returncode != 0:
        raise PostconfError(f"postconf -c {config_dir}: {done.stderr.strip()}")
    main: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition("=")
        main[name.strip()] = value.strip()
    services = _run(["postconf", "-c", config_dir, "-M"])
    overrides = _run(["postconf", "-c", config_dir, "-P", "-x"])
    found: dict[tuple[str, str], dict[str, str]] = {}
    for line in overrides.stdout.splitlines():
        key, _, value = line.partition("=")
        service, _, rest = key.strip().rpartition("/")  # name/type/parameter; names hold no '/'
        name, _, type_ = service.partition("/")
        found.setdefault((name, type_), {})[rest] = value.strip()
    view = []
    for line in services.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 8:
            name, type_, command = fields[0], fields[1], fields[7]
            view.append(Service(name, type_, command, found.get((name, type_), {})))
    return PostfixView(main=main, services=tuple(view), config_dir=config_dir.rstrip("/") or "/")


def read_sendmail(path: str) -> SendmailView:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise SendmailConfigError(f"{path}: {exc.strerror}") from None
    return parse_sendmail_cf(text, path)


def postmap_lookup(config_dir: str) -> Lookup:
    def lookup(table: str, text: str) -> str | None:
        done = _run(["postmap", "-c", config_dir, "-q", text, table])
        return done.stdout.strip() if done.returncode == 0 else None

    return lookup


# --- live probes ------------------------------------------------------------------------------


def _milter_address(spec: str) -> tuple[int, object]:
    """(address family, address) of a libmilter socket spec (milter.socket)."""
    if spec.startswith(("unix:", "local:")):
        return socket.AF_UNIX, spec.split(":", 1)[1]
    if spec.startswith("/"):
        return socket.AF_UNIX, spec
    family, _, rest = spec.partition(":")
    port, _, host = rest.partition("@")
    af = socket.AF_INET6 if family == "inet6" else socket.AF_INET
    return af, (host or ("::1" if af == socket.AF_INET6 else "127.0.0.1"), int(port))


def _packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(command) + len(data)) + command + data


def _read_packet(sock: socket.socket) -> tuple[bytes, bytes]:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the milter closed the connection")
            buf += chunk
        return buf

    (size,) = struct.unpack("!I", exactly(4))
    if not 0 < size < 1 << 20:
        raise ConnectionError(f"not a milter reply (length {size})")
    body = exactly(size)
    return body[:1], body[1:]


def probe_milter(cfg: Config, timeout: float) -> Check:
    """A real milter negotiation (SMFIC_OPTNEG), as Postfix opens every connection, then QUIT."""
    spec = cfg.milter.socket
    fix = f"start the milter (systemctl start zivmilter) and check that it listens on {spec}"
    try:
        family, address = _milter_address(spec)
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)  # type: ignore[arg-type]
            offer = struct.pack("!III", _MILTER_VERSION, _ALL_ACTIONS, _ALL_PROTOCOL_STEPS)
            sock.sendall(_packet(_SMFIC_OPTNEG, offer))
            command, data = _read_packet(sock)
            sock.sendall(_packet(_SMFIC_QUIT))
    except (OSError, ValueError) as exc:
        return Check("milter-answers", False, f"no milter answers on {spec}: {exc}", fix)
    if command != _SMFIC_OPTNEG or len(data) < 12:
        return Check(
            "milter-answers",
            False,
            f"{spec} answered, but not a milter negotiation (command {command!r})",
            fix,
        )
    version = struct.unpack("!I", data[:4])[0]
    return Check("milter-answers", True, f"the milter answers on {spec} (protocol {version})")


def probe_reinject(cfg: Config, timeout: float) -> Check:
    """EHLO, MAIL, RCPT to the postmaster of our own domain, RSET: accepted, nothing sent."""
    host, port = cfg.reinject.host, cfg.reinject.port
    rcpt = f"postmaster@{cfg.organization.domains[0]}"
    fix = (
        f"check `postfix status`, the {host}:{port} service in master.cf and its "
        "mynetworks/smtpd_*_restrictions (loopback must be permitted)"
    )
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.ehlo("zivmilter-doctor")
            code, reply = smtp.mail("")
            if code == 250:
                code, reply = smtp.rcpt(rcpt)
            smtp.rset()
    except (OSError, smtplib.SMTPException) as exc:
        return Check("reinject-accepts", False, f"{host}:{port}: {exc}", fix)
    if code != 250:
        text = reply.decode(errors="replace")
        return Check("reinject-accepts", False, f"{host}:{port} refuses: {code} {text}", fix)
    return Check("reinject-accepts", True, f"{host}:{port} accepts mail (RCPT {rcpt}: 250)")


def check_key_file(cfg: Config) -> Check:
    path = cfg.store.key_file
    try:
        st = os.stat(path)
    except OSError as exc:
        return Check(
            "key-file",
            False,
            f"{path}: {exc.strerror}",
            f"restore the key from its backup (a new installation: zivmilter keygen {path})",
        )
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode) or mode & 0o077:
        return Check(
            "key-file",
            False,
            f"{path}: mode {mode:04o}: others may read the key",
            f"chmod 600 {path}",
        )
    return Check("key-file", True, f"{path}: mode {mode:04o}, owner uid {st.st_uid}")


def check_store(cfg: Config) -> Check:
    """Open the store as the milter does, but read-only (so that the doctor, as whichever user
    runs it, creates, migrates and locks nothing): the key must unwrap its stored data keys."""
    from zivmilter.store import DB_NAME, open_store

    if cfg.store.backend == "sqlite":
        try:
            os.stat(os.path.join(cfg.store.path, DB_NAME))
        except FileNotFoundError:
            made = "`zivmilter run` makes it at its start"
            return Check("store", True, f"{cfg.store.path}: no store yet ({made})")
        except OSError:
            pass  # a folder this user may not enter: the open below says so
    try:
        store = open_store(cfg, read_only=True)
    except ZivmilterError as exc:
        return Check(
            "store",
            False,
            f"the store does not open: {exc}",
            f"set store.key_file to the key this store was written with ({cfg.store.path})",
        )
    store.close()
    return Check("store", True, f"{cfg.store.path} opens, and the key decrypts its stored keys")


def check_dnssec(cfg: Config, name: str, timeout: float) -> Check:
    from zivmilter.transport.resolver import Resolver

    which = ", ".join(cfg.transport.resolver) or "/etc/resolv.conf"
    fix = (
        f"point transport.resolver at a validating resolver (e.g. unbound on 127.0.0.1) "
        f"instead of {which}"
    )
    try:
        answer = Resolver(cfg.transport.resolver).query(name, "SOA", timeout)
    except ZivmilterError as exc:
        return Check("dnssec", False, str(exc), fix)
    if answer.status == "error":
        return Check("dnssec", False, f"{which}: {answer.error}", fix)
    if not answer.secure:
        return Check(
            "dnssec",
            False,
            f"{which} answers SOA {name} without the AD bit: it does "
            "not validate DNSSEC (pane and dane would never be reached)",
            fix,
        )
    return Check("dnssec", True, f"{which} validates DNSSEC (AD bit on SOA {name})")


def check_portal(cfg: Config, timeout: float) -> Check:
    host, _, port = cfg.portal.listen.rpartition(":")
    root = urlsplit(cfg.portal.base_url).path.rstrip("/")
    url = f"http://{host}:{port}{root}/healthz"
    fix = (
        "start the portal (systemctl start zivmilter-portal); it listens on portal.listen "
        f"({cfg.portal.listen})"
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(64).decode(errors="replace")
            status = response.status
    except (OSError, urllib.error.URLError) as exc:
        return Check("portal", False, f"{url}: {exc}", fix)
    if status != 200 or body.strip() != "ok":
        return Check("portal", False, f"{url}: {status} {body!r}", fix)
    return Check("portal", True, f"the portal answers on {cfg.portal.listen} ({url}: ok)")


def run_checks(cfg: Config, options: DoctorOptions) -> list[Check]:
    """The whole checklist, in the order an admin fixes things."""
    view = read_postfix(options.postfix_dir)
    lookup = postmap_lookup(options.postfix_dir)
    if options.sendmail_cf is not None:
        sendmail = read_sendmail(options.sendmail_cf)
        mta = [*sendmail_checks(sendmail, cfg), *relay_checks(view, cfg, lookup)]
    else:
        mta = postfix_checks(view, cfg, lookup)
    return [
        probe_milter(cfg, options.timeout),
        *mta,
        probe_reinject(cfg, options.timeout),
        check_key_file(cfg),
        check_store(cfg),
        check_dnssec(cfg, options.dnssec_name, options.timeout),
        check_portal(cfg, options.timeout),
    ]
