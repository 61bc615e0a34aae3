"""Dovecot SASL for integration tests: a throwaway Dovecot that only authenticates.

Postfix asks it with `smtpd_sasl_type = dovecot` over a unix socket (`socket_path`); users come
from a passwd-file with plain-text passwords (test credentials only). No IMAP/POP3 listeners.

    with DovecotSasl({"app1": "secret1"}) as sasl:
        PostfixInstance(extra=sasl.postfix_settings(), ...)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path


class SaslError(AssertionError):
    """Dovecot did not start or stop as a test needs (fails the test)."""


class DovecotSasl:
    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)
        self.dir = Path("/nonexistent")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> str:
        return str(self.dir / "auth-postfix")

    def postfix_settings(self) -> dict[str, str]:
        """main.cf (or `-o`) settings that make smtpd offer AUTH through this Dovecot."""
        return {
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": self.socket_path,
        }

    def _config(self) -> str:
        d = self.dir
        # Dovecot drops to these users; both come with Debian's dovecot-core package.
        return f"""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
instance_name = zivmilter-test-{os.getpid()}-{id(self)}
protocols = none
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {self.socket_path} {{
    mode = 0666
  }}
}}
"""

    def start(self) -> DovecotSasl:
        dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not os.path.exists(dovecot):
            raise SaslError("dovecot is not installed (Debian package dovecot-core)")
        self.dir = Path(tempfile.mkdtemp(prefix="zivmilter-sasl-"))
        self.dir.chmod(0o755)  # Postfix's smtpd (user postfix) reaches the socket through it
        users = self.dir / "users"
        users.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        users.chmod(0o644)  # read by Dovecot's auth process (user dovecot)
        conf = self.dir / "dovecot.conf"
        conf.write_text(self._config())
        self._proc = subprocess.Popen(
            [dovecot, "-F", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "dovecot.stderr").open("wb"),
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise SaslError(f"dovecot exited with {self._proc.returncode}:\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket_path)
                    # The auth server greets with its version line once it is ready.
                    s.settimeout(2)
                    if s.recv(64).startswith(b"VERSION"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SaslError(f"dovecot auth socket not ready:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        out = []
        for name in ("dovecot.stderr", "dovecot.log"):
            path = self.dir / name
            if path.exists():
                out.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()  # the master ends its auth processes itself
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir.is_dir():
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DovecotSasl:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
