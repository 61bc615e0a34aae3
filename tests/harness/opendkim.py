"""Debian's OpenDKIM as a real second milter beside zivmilter, for the DKIM tests (issue 23).

`Signer` makes a key with `opendkim-genkey`, writes the KeyTable/SigningTable the README shows,
runs `opendkim -f -x CONF` on a loopback port and stops it by pid. `published()` is the TXT
record opendkim-genkey wrote, for dkimpy's dnsfunc and for the test zones. `wire()` puts it on
a PostfixInstance in either order, and on the re-injection listener, as the README says.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness.instance import Instance
from tests.harness.postfix import HOST, PostfixInstance, free_port

OPENDKIM = "/usr/sbin/opendkim"
GENKEY = "/usr/sbin/opendkim-genkey"


def available() -> bool:
    return Path(OPENDKIM).exists() and Path(GENKEY).exists()


class Signer(Instance):
    """`with Signer("hospital.example", "zm1") as s:` signs every From at the domain (mode s)."""

    name = "opendkim"

    def __init__(self, domain: str, selector: str = "zm1") -> None:
        self.domain = domain
        self.selector = selector
        self.port = free_port()
        self.postfix_socket = f"inet:{HOST}:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="zivmilter-opendkim-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def key_file(self) -> Path:
        return self.dir / f"{self.selector}.private"

    def published(self) -> str:
        """The TXT record's text (`v=DKIM1; k=rsa; p=...`), joined from genkey's quoted pieces."""
        zone = (self.dir / f"{self.selector}.txt").read_text()
        return "".join(re.findall(r'"([^"]*)"', zone))

    def tables(self) -> tuple[str, str]:
        """The KeyTable and SigningTable lines the README gives (one key for the whole domain:
        every From zivmilter writes is at an organization domain)."""
        name = f"{self.selector}._domainkey.{self.domain}"
        key_table = f"{name} {self.domain}:{self.selector}:{self.key_file}\n"
        signing_table = f"*@{self.domain} {name}\n"
        return key_table, signing_table

    def start(self) -> Signer:
        subprocess.run(
            [GENKEY, "-b", "2048", "-d", self.domain, "-s", self.selector, "-D", str(self.dir)],
            check=True,
            capture_output=True,
        )
        self.key_file.chmod(0o600)
        key_table, signing_table = self.tables()
        (self.dir / "KeyTable").write_text(key_table)
        (self.dir / "SigningTable").write_text(signing_table)
        conf = self.dir / "opendkim.conf"
        conf.write_text(
            "Mode s\n"
            f"KeyTable file:{self.dir}/KeyTable\n"
            f"SigningTable refile:{self.dir}/SigningTable\n"
            "InternalHosts 127.0.0.1\n"
            "Canonicalization relaxed/simple\n"
            f"Socket inet:{self.port}@{HOST}\n"
            f"PidFile {self.dir}/opendkim.pid\n"
            "Syslog yes\nLogWhy yes\n"
            "UMask 007\n"
            # The key sits under /tmp, which others may write: OpenDKIM would refuse it as
            # unsafe (a tempfail at end-of-message). A real install keeps it in /etc/dkimkeys.
            "RequireSafeKeys false\n"
        )
        with self._or_stopped():
            self._spawn([OPENDKIM, "-f", "-x", str(conf)], self.dir / "opendkim.out")
            self._wait_listening(self.port, host=HOST)
        return self

    def stop(self) -> None:
        self._end_process(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# What the README tells the admin to change on the re-injection listener and the replies
# listener: the signer alone there (never zivmilter), and on the re-injection listener Milters
# no longer switched off by receive_override_options.
_REINJECT_MILTERS = "  -o smtpd_milters=\n"
_NO_MILTERS = ",no_milters\n"


def wire(pf: PostfixInstance, zivmilter_socket: str, signer: Signer, *, signer_first: bool) -> None:
    """Both milters on `pf` (not started yet) in the given order; the signer alone on the
    re-injection listener."""
    order = [zivmilter_socket, signer.postfix_socket]
    if signer_first:
        order.reverse()
    milters = ", ".join(order)
    pf.extra["smtpd_milters"] = pf.extra["non_smtpd_milters"] = milters
    shipped_master_cf = pf.master_cf

    def master_cf() -> str:
        text = shipped_master_cf()
        for old, new, times in (
            # the re-injection listener and the replies listener
            (_REINJECT_MILTERS, f"  -o smtpd_milters={signer.postfix_socket}\n", 2),
            (_NO_MILTERS, "\n", 1),
        ):
            if text.count(old) != times:
                raise AssertionError(f"master.cf.zivmilter: expected {old!r} {times} times")
            text = text.replace(old, new)
        return text

    pf.master_cf = master_cf  # type: ignore[method-assign]
