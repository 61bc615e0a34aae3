"""A private, throwaway Debian Sendmail for integration tests, beside the Postfix ones.

Debian's sendmail-bin conflicts with postfix as a package, so scripts/install unpacks the .debs
(never installs them) under SENDMAIL_ROOT. Its sendmail.cf is built with m4 as an admin would:
a few test-only site lines (paths, port, no DNS), then `include()` of the SHIPPED
sendmail/zivmilter.mc with only the milter socket substituted, then the MAILER lines; so every
test that uses it also proves that fragment. Facts it relies on: /work/shared/SENDMAIL-NOTES.md.

The daemon runs in the foreground (-bD) in namespaces of its own inside scripts/sandbox: a UTS
namespace for a dotted hostname (else Sendmail sleeps 60 s trying to qualify its name) and a
mount namespace whose /dev has a `log` socket that this harness reads, so the test sees
Sendmail's syslog lines (the sandbox has no syslog daemon).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from tests.harness.instance import Instance
from tests.harness.postfix import HOST, REPO, free_port

SENDMAIL_ROOT = Path(
    os.environ.get("ZIVMILTER_SENDMAIL_ROOT", "/var/cache/zivmilter-tests/sendmail")
)
ROOT = SENDMAIL_ROOT / "root"
BINARY = ROOT / "usr/libexec/sendmail/sendmail"
CF_M4 = ROOT / "usr/share/sendmail/cf/m4/cf.m4"
LIBS = ROOT / "usr/lib/x86_64-linux-gnu"  # libwrap.so.0, which this machine lacks
SHIPPED_MC = REPO / "sendmail" / "zivmilter.mc"
SHIPPED_SOCKET = "S=local:/run/zivmilter/zivmilter.sock"

MTA_HOSTNAME = "mta.zivmilter.test"
DAEMON_NAME = "MTA"  # DAEMON_OPTIONS Name=, which the milter sees as {daemon_name}

# Inside the daemon's own mount namespace: a /dev with the few devices Sendmail opens and our
# log socket as /dev/log, then the dotted hostname. "$0" is the instance directory.
_NAMESPACE_SETUP = r"""
set -e
mount -t tmpfs -o mode=755 tmpfs "$0/dev"
mknod -m 666 "$0/dev/null" c 1 3
mknod -m 666 "$0/dev/zero" c 1 5
mknod -m 666 "$0/dev/random" c 1 8
mknod -m 666 "$0/dev/urandom" c 1 9
touch "$0/dev/log"
mount --bind "$0/log.sock" "$0/dev/log"
mount --rbind "$0/dev" /dev
mount --bind "$0/etc/nsswitch.conf" /etc/nsswitch.conf
hostname "$HOSTNAME_FOR_SENDMAIL"
exec "$@"
"""


class SendmailError(AssertionError):
    """The test instance did not start or behave as a test needs (fails the test)."""


def available() -> bool:
    """Whether scripts/install unpacked Debian's Sendmail on this machine."""
    return BINARY.is_file() and CF_M4.is_file()


def _m4() -> str:
    found = shutil.which("m4")
    return found if found is not None else str(ROOT / "usr/bin/m4")


class _SyslogReceiver:
    """What Sendmail writes to /dev/log, kept in memory (one datagram, one line)."""

    def __init__(self, path: Path) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            line = re.sub(r"^<\d+>", "", data.decode(errors="replace")).rstrip("\n\0")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def close(self) -> None:
        self._sock.close()


class SendmailInstance(Instance):
    """`with SendmailInstance(milter=z.socket) as sm: smtplib.SMTP(HOST, sm.smtp_port)...`.

    milter: libmilter's socket spec (inet:PORT@HOST), put in place of the shipped `S=`.
    Recipient domains are delivered to the address /etc/hosts gives them (no DNS, no MX: a test
    bind-mounts its own /etc/hosts), on port 25, as the Postfix test instances do.
    """

    error = SendmailError
    name = "sendmail"

    def __init__(self, *, milter: str, extra_mc: Sequence[str] = ()) -> None:
        self.milter = milter
        self.extra_mc = list(extra_mc)
        self.smtp_port = free_port()
        self.directory = Path("/nonexistent")
        self._proc: subprocess.Popen[bytes] | None = None
        self._syslog: _SyslogReceiver | None = None

    # --- configuration ---------------------------------------------------------------------

    def site_mc(self) -> str:
        """The test-only head of sendmail.mc: where the files are, the port, no DNS."""
        d = self.directory
        lines = [
            "divert(-1)",
            "divert(0)dnl",
            "OSTYPE(`linux')dnl",  # not `debian': that one includes /usr/share/sendmail by path
            f"define(`confEBINDIR', `{ROOT}/usr/libexec/sendmail')dnl",
            f"define(`MAIL_SETTINGS_DIR', `{d}/etc/')dnl",
            f"define(`QUEUE_DIR', `{d}/queue')dnl",
            f"define(`confPID_FILE', `{d}/run/sendmail.pid')dnl",
            f"define(`STATUS_FILE', `{d}/run/sendmail.st')dnl",
            # hosts from /etc/hosts only: no DNS, no MX lookups (a domain's "MX" is its address)
            f"define(`confSERVICE_SWITCH_FILE', `{d}/etc/service.switch')dnl",
            "define(`confDONT_PROBE_INTERFACES', `True')dnl",
            "define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl",
            "FEATURE(`nocanonify')dnl",
            "FEATURE(`accept_unresolvable_domains')dnl",
            "FEATURE(`no_default_msa')dnl",
            f"DAEMON_OPTIONS(`Family=inet, Name={DAEMON_NAME}, Port={self.smtp_port}, "
            f"Addr={HOST}')dnl",
            # the message is at the next server before the client gets its 250: no polling
            "define(`confDELIVERY_MODE', `interactive')dnl",
            # a busy 2-core CI must not make Sendmail queue or refuse (defaults: 8 and 12 x CPUs)
            "define(`confQUEUE_LA', `100')dnl",
            "define(`confREFUSE_LA', `100')dnl",
            "define(`confTO_IDENT', `0')dnl",
            "define(`confTO_CONNECT', `5s')dnl",
            *self.extra_mc,
            # what the admin adds (sendmail/README.md), with the file in this instance's etc/
            f"include(`{d}/etc/zivmilter.mc')dnl",
            "MAILER(`local')dnl",
            "MAILER(`smtp')dnl",
        ]
        return "\n".join(lines) + "\n"

    def submit_mc(self) -> str:
        """The MSP's submit.mc, as Debian's: sendmail(1) on the host queues in its own
        clientmqueue and relays over SMTP to the daemon's listener, so the milter sees it."""
        d = self.directory
        lines = [
            "divert(-1)",
            "divert(0)dnl",
            "define(`confCF_VERSION', `Submit')dnl",
            "define(`__OSTYPE__',`')dnl",
            "define(`confTIME_ZONE', `USE_TZ')dnl",
            "define(`confDONT_INIT_GROUPS', `True')dnl",
            # test only: no smmsp user on this machine; the paths of this instance
            "define(`confRUN_AS_USER', `mail:mail')dnl",
            f"define(`MSP_QUEUE_DIR', `{d}/clientmqueue')dnl",
            f"define(`confPID_FILE', `{d}/run/sm-client.pid')dnl",
            f"define(`STATUS_FILE', `{d}/run/sm-client.st')dnl",
            f"define(`confSERVICE_SWITCH_FILE', `{d}/etc/service.switch')dnl",
            f"define(`RELAY_MAILER_ARGS', `TCP $h {self.smtp_port}')dnl",
            f"FEATURE(`msp', `[{HOST}]')dnl",
        ]
        return "\n".join(lines) + "\n"

    def zivmilter_mc(self) -> str:
        shipped = SHIPPED_MC.read_text()
        if SHIPPED_SOCKET not in shipped:
            # a fragment that no longer has the placeholder would silently test something else
            raise SendmailError(f"{SHIPPED_MC}: expected {SHIPPED_SOCKET!r}")
        return shipped.replace(SHIPPED_SOCKET, f"S={self.milter}")

    def _write_config(self) -> Path:
        d = self.directory
        etc = d / "etc"
        for sub in ("etc", "run", "dev"):
            (d / sub).mkdir(mode=0o755)
        (d / "queue").mkdir(mode=0o700)  # Sendmail checks the queue's mode itself
        (etc / "service.switch").write_text("hosts files\naliases files\n")
        (etc / "nsswitch.conf").write_text("hosts: files\n")
        (etc / "zivmilter.mc").write_text(self.zivmilter_mc())
        (etc / "sendmail.mc").write_text(self.site_mc())
        (etc / "submit.mc").write_text(self.submit_mc())
        client_queue = d / "clientmqueue"
        client_queue.mkdir(mode=0o770)
        mail = pwd.getpwnam("mail")
        os.chown(client_queue, mail.pw_uid, mail.pw_gid)  # the MSP runs as mail (RunAsUser)
        for name in ("submit", "sendmail"):
            built = subprocess.run(
                [_m4(), str(CF_M4), str(etc / f"{name}.mc")], capture_output=True, timeout=30
            )
            if built.returncode != 0 or built.stderr.strip():
                raise SendmailError(f"m4 {name}.mc: {built.stderr.decode(errors='replace')}")
            (etc / f"{name}.cf").write_bytes(built.stdout)
        return etc / "sendmail.cf"

    def build_cf(self, directory: Path) -> Path:
        """Only build the configuration in `directory` (etc/sendmail.cf, with m4 as an admin
        does) and start nothing: `zivmilter doctor --sendmail-config` reads it."""
        directory.mkdir(mode=0o755)
        self.directory = directory
        return self._write_config()

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> SendmailInstance:
        if not available():
            raise SendmailError(f"no Sendmail unpacked under {SENDMAIL_ROOT}: run scripts/install")
        self.directory = Path(tempfile.mkdtemp(prefix="zivmilter-sendmail-"))
        self.directory.chmod(0o755)  # the MSP (user mail) reaches its clientmqueue inside
        with self._or_stopped():
            cf = self._write_config()
            self._syslog = _SyslogReceiver(self.directory / "log.sock")
            env = dict(os.environ, LD_LIBRARY_PATH=str(LIBS), HOSTNAME_FOR_SENDMAIL=MTA_HOSTNAME)
            setup = ["sh", "-c", _NAMESPACE_SETUP, str(self.directory)]
            daemon = [str(BINARY), "-C", str(cf), "-bD", "-q1m"]  # -bD: in the foreground
            unshare = ["unshare", "--uts", "--mount", "--", *setup, *daemon]
            self._spawn(unshare, self.directory / "sendmail.out", env)
            self._wait_listening(self.smtp_port, host=HOST)
        return self

    def stop(self) -> None:
        self._end_process(10)  # -bD: the daemon itself, it exits within milliseconds
        if self._syslog is not None:
            self._syslog.close()
        if self.directory.is_dir() and not os.environ.get("ZIVMILTER_KEEP_SENDMAIL"):
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- observation -----------------------------------------------------------------------

    def log(self) -> str:
        """Everything Sendmail logged so far, one syslog line per line."""
        if self._syslog is None:
            return ""
        with self._syslog._cond:
            return "\n".join(self._syslog.lines)

    def queue(self, which: str = "queue") -> list[str]:
        """Queue ids of the messages in the daemon's queue, or the MSP's ("clientmqueue")."""
        return sorted(p.name[2:] for p in (self.directory / which).glob("qf*"))

    def _run(self, cf: str, args: Sequence[str], data: bytes | None = None) -> str:
        if self._proc is None:
            raise SendmailError("the instance is not running")
        # in the daemon's namespaces: its dotted hostname, its /dev/log
        enter = ["nsenter", "-t", str(self._proc.pid), "--uts", "--mount", "--"]
        done = subprocess.run(
            [*enter, str(BINARY), "-C", str(self.directory / "etc" / cf), *args],
            input=data,
            env=dict(os.environ, LD_LIBRARY_PATH=str(LIBS)),
            capture_output=True,
            timeout=60,
        )
        out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise SendmailError(f"sendmail -C {cf} {' '.join(args)}: exit {done.returncode}: {out}")
        return out

    def submit(self, data: bytes, sender: str) -> str:
        """`sendmail -f SENDER -oi -t` on the host, through the MSP (submit.cf), as a program
        would (without -f the envelope sender is the user at this host's name)."""
        return self._run("submit.cf", ["-f", sender, "-oi", "-t"], data)

    def run_client_queue(self) -> str:
        """The MSP's queue run (`sendmail -Ac -q -v`: its cron job or daemon); the transcript."""
        return self._run("submit.cf", ["-q", "-v"])
