"""A private, throwaway Postfix instance for integration tests and the throughput bench.

Its main.cf and master.cf are built FROM the snippets shipped in postfix/ (only paths, ports and
the milter socket are substituted), so every test that uses it also proves those snippets.
Facts it relies on are in POSTFIX-NOTES.md; receiving servers come from tests/harness/sink.py.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness.instance import Instance

if TYPE_CHECKING:
    import trustme

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "postfix"
HEADER_CHECK_TABLES = (
    "zivmilter_header_checks",
    "zivmilter_milter_header_checks",
    "zivmilter_smtp_header_checks",
    "zivmilter_reinject_header_checks",
)
# What the shipped snippets say, and what a test instance puts in its place.
SHIPPED_SOCKET = "unix:/run/zivmilter/zivmilter.sock"
SHIPPED_CONFIG_DIR = "/etc/postfix/"
SHIPPED_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
SHIPPED_REINJECT = "127.0.0.1:10026"
SHIPPED_REPLIES = "127.0.0.1:10027"

POSTFIX_FILES = Path("/etc/postfix/postfix-files")  # Postfix's own list of its files

HOST = "127.0.0.1"
MYHOSTNAME = "gateway.zivmilter.test"


class PostfixError(AssertionError):
    """The test instance did not start, stop or behave as a test needs (fails the test)."""


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (inside the sandbox nobody else races for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ca_file(ca: trustme.CA) -> Iterator[str]:
    """The CA's certificate in a PEM file, for a PostfixInstance's `tls_ca_file`: readable by
    the postfix user (Postfix reads it as that user), removed afterwards."""
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(ca.cert_pem.bytes())
    try:
        os.chmod(f.name, 0o644)
        yield f.name
    finally:
        os.unlink(f.name)


def postfix_milter_socket(spec: str) -> str:
    """Postfix's spelling of a milter socket: libmilter's inet:PORT@HOST becomes inet:HOST:PORT."""
    found = re.fullmatch(r"(inet6?):(\d+)@(.+)", spec)
    if found is None:
        return spec
    family, port, host = found.groups()
    return f"inet:[{host}]:{port}" if family == "inet6" else f"inet:{host}:{port}"


def parse_main_cf(text: str) -> list[tuple[str, str]]:
    """`name = value` pairs of a main.cf-style text, continuation lines joined, comments dropped."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if not pairs:
                raise PostfixError(f"continuation line without a parameter: {line!r}")
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise PostfixError(f"not a main.cf line: {line!r}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def _substitute(text: str, replacements: Mapping[str, str], what: str) -> str:
    # A shipped snippet that no longer contains a placeholder would silently test something
    # else; fail instead.
    for old, new in replacements.items():
        if old not in text:
            raise PostfixError(f"{what}: expected {old!r} in the shipped snippet")
        text = text.replace(old, new)
    return text


# The instance's own services; the zivmilter ones are appended from postfix/master.cf.zivmilter.
# chroot is n everywhere: no copies of /etc files under the queue directory.
_MASTER_BASE = """\
{listen} inet  n       -       n       -       -       smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance(Instance):
    """`with PostfixInstance(milter="inet:9900@127.0.0.1") as pf: ...`.

    milter: the socket as Postfix writes it (unix:/PATH, inet:HOST:PORT); libmilter's
    inet:PORT@HOST is accepted too and translated. None: no milter.
    Listens for SMTP on `HOST:smtp_port`, for re-injection on `HOST:reinject_port` and for the
    portal's replies on `HOST:replies_port`.
    dns=False: no DNS at all, the smtp client resolves names with /etc/hosts (a test may
    bind-mount its own inside the sandbox), and a recipient domain's "MX" is that domain's own
    address. dns=True: the system resolver, i.e. the sandbox's test DNS.
    """

    error = PostfixError
    name = "postfix master"

    def __init__(
        self,
        *,
        milter: str | None = None,
        dns: bool = False,
        relayhost: str | None = None,
        tls_ca_file: str | os.PathLike[str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.milter = milter
        self.dns = dns
        self.relayhost = relayhost
        self.tls_ca_file = None if tls_ca_file is None else os.fspath(tls_ca_file)
        self.extra = dict(extra or {})
        self.smtp_port = free_port()
        self.reinject_port = free_port()
        self.replies_port = free_port()
        self.directory = Path("/nonexistent")
        self._proc: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None

    # --- configuration ---------------------------------------------------------------------

    def _paths(self) -> dict[str, str]:
        return {SHIPPED_CONFIG_DIR: f"{self.config_dir}/"}

    def main_cf(self) -> str:
        d = self.directory
        settings: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": f"{d}/queue",
            "data_directory": f"{d}/data",
            "mail_owner": "postfix",
            "myhostname": MYHOSTNAME,
            "mydomain": "zivmilter.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_transport": "error:5.1.1 local delivery is off in this test instance",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "maillog_file": f"{d}/maillog",
            "maillog_file_prefixes": str(d),
            "smtpd_peername_lookup": "no",
            "biff": "no",
            "append_dot_mydomain": "no",
            # Deferred mail is retried within seconds, so a test can watch it happen.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "5s",
            "smtp_connect_timeout": "5s",
            "relayhost": self.relayhost or "",
        }
        shipped = (SHIPPED / "main.cf.zivmilter").read_text()
        replacements = self._paths()
        if self.milter is not None:
            replacements[SHIPPED_SOCKET] = postfix_milter_socket(self.milter)
        for name, value in parse_main_cf(_substitute(shipped, replacements, "main.cf.zivmilter")):
            settings[name] = value
        if self.milter is None:
            settings["smtpd_milters"] = settings["non_smtpd_milters"] = ""
        if not self.dns:
            settings["smtp_dns_support_level"] = "disabled"
            settings["smtp_host_lookup"] = "native"
        settings.update(self.extra)
        return "".join(f"{name} = {value}\n" for name, value in settings.items())

    def master_cf(self) -> str:
        shipped = (SHIPPED / "master.cf.zivmilter").read_text()
        replacements = self._paths()
        replacements[SHIPPED_REINJECT] = f"{HOST}:{self.reinject_port}"
        replacements[SHIPPED_REPLIES] = f"{HOST}:{self.replies_port}"
        if self.tls_ca_file is not None:
            replacements[SHIPPED_CA_FILE] = self.tls_ca_file
        snippet = _substitute(shipped, replacements, "master.cf.zivmilter")
        return _MASTER_BASE.format(listen=f"{HOST}:{self.smtp_port}") + snippet

    @property
    def config_dir(self) -> Path:
        # Apart from the queue: `postfix check` wants everything under it owned by root.
        return self.directory / "etc"

    def _write_config(self) -> None:
        d, etc = self.directory, self.config_dir
        etc.mkdir(mode=0o755)
        (etc / "main.cf").write_text(self.main_cf())
        (etc / "master.cf").write_text(self.master_cf())
        for table in HEADER_CHECK_TABLES:
            shutil.copyfile(SHIPPED / table, etc / table)
        # postfix(1) waits while main.cf looks freshly edited (~2 s): date the files back.
        past = time.time() - 60
        for path in etc.iterdir():
            os.utime(path, (past, past))
        data = d / "data"
        data.mkdir(mode=0o700)
        pw = pwd.getpwnam("postfix")
        os.chown(data, pw.pw_uid, pw.pw_gid)

    def _make_queue(self) -> None:
        """The queue directories with the owners and modes Postfix's own postfix-files lists."""
        owners = {"root": 0, "$mail_owner": pwd.getpwnam("postfix").pw_uid}
        groups = {"-": -1, "$setgid_group": grp.getgrnam("postdrop").gr_gid}
        for line in POSTFIX_FILES.read_text().splitlines():
            fields = line.split(":")
            if len(fields) < 5 or fields[1] != "d" or not fields[0].startswith("$queue_directory"):
                continue
            path = self.directory / "queue" / fields[0].removeprefix("$queue_directory").lstrip("/")
            path.mkdir(exist_ok=True)
            os.chown(path, owners[fields[2]], groups[fields[3]])
            path.chmod(int(fields[4], 8))

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> PostfixInstance:
        if os.geteuid() != 0:
            raise PostfixError("a private Postfix needs root: run through scripts/test")
        # Every parent must be traversable by the postfix user: not pytest's 0700 tmp_path.
        self.directory = Path(tempfile.mkdtemp(prefix="zivmilter-postfix-"))
        self.directory.chmod(0o755)
        with self._or_stopped():
            self._write_config()
            # `postfix check` would do the same in 2 s: too slow for one instance per test.
            self._make_queue()
            (self.directory / "queue" / "quick-start").touch()  # so start-fg skips it too
            master = ["postfix", "-c", str(self.config_dir), "start-fg"]
            self._spawn(master, self.directory / "master.out")
            self._wait_listening(self.smtp_port)
            self._wait_listening(self.reinject_port)
            self._wait_listening(self.replies_port)
        return self

    def stop(self) -> None:
        """Stop the master (it ends its children), reap it, keep the log, remove the files."""
        self._end_process(
            30,
            lambda _: subprocess.run(
                ["postfix", "-c", str(self.config_dir), "stop"],
                capture_output=True,
                timeout=30,
                check=False,
            ),
        )
        if self.directory.is_dir():
            self._final_log = self._read_log()
            if not os.environ.get("ZIVMILTER_KEEP_POSTFIX"):
                shutil.rmtree(self.directory, ignore_errors=True)

    def _postfix(self, *args: str) -> None:
        done = subprocess.run(
            ["postfix", "-c", str(self.config_dir), *args], capture_output=True, timeout=60
        )
        if done.returncode != 0:
            raise PostfixError(
                f"postfix {' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
            )

    # --- observation -----------------------------------------------------------------------

    def _read_log(self) -> str:
        try:
            return (self.directory / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        """Everything this instance logged so far (also after stop)."""
        if self._proc is None and self._final_log is not None:
            return self._final_log
        return self._read_log()

    def queue(self) -> list[dict[str, Any]]:
        """The queue as `postqueue -j` reports it: one dict per message."""
        done = subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-j"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]

    def flush(self) -> None:
        """Retry deferred mail now."""
        subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-f"],
            capture_output=True,
            timeout=30,
            check=True,
        )
