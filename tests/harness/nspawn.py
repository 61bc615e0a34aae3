"""A Debian root booted under a real systemd for a test: a fresh overlay on a cached root
(scripts/install-test-root, scripts/install-deb-root), `systemd-nspawn --private-network -b`
(loopback only), commands run inside with `nsenter` as root. Used by tests/integration/test_deb.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


class BootedRoot:
    """`lower` booted with a writable layer in `workdir`; the cache itself stays clean."""

    def __init__(self, lower: Path, workdir: Path, machine: str) -> None:
        self.lower = lower
        self.workdir = workdir
        self.machine = machine
        self.root = workdir / "root"
        self.log = workdir / "console.log"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.mounted = False

    def mount(self) -> None:
        upper, work = self.workdir / "upper", self.workdir / "work"
        for d in (upper, work, self.root):
            d.mkdir()
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.lower},upperdir={upper},workdir={work}", str(self.root)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.mounted = True

    def boot(self) -> None:
        """Mount (unless done, so that files can be put in first), boot, wait until up."""
        if not self.mounted:
            self.mount()
        with open(self.log, "wb") as log:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--private-network",
                 "-M", self.machine, "-D", str(self.root), "-b", "--console=pipe"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.pid1:
            assert self.nspawn.poll() is None, f"nspawn ended: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the container's PID 1 never appeared"
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
            found = children.read_text().split() if children.exists() else []
            self.pid1 = int(found[0]) if found else 0
            time.sleep(0.1)
        while True:
            state = self.run("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            assert time.monotonic() < deadline, f"system never came up: {state}"
            time.sleep(0.3)

    def run(
        self, script: str, *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """bash -euo pipefail -c SCRIPT inside, as root, in /root."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "--", "/usr/bin/env", "-i",
             *(f"{k}={v}" for k, v in ENV.items()),
             "bash", "-euo", "pipefail", "-c", f"cd /root\n{script}"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"inside the container, exit {proc.returncode}:\n{script}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    def stop(self) -> None:
        if self.nspawn is not None:
            if self.pid1 and self.nspawn.poll() is None:
                os.kill(self.pid1, signal.SIGRTMIN + 4)  # systemd's clean poweroff
            try:
                self.nspawn.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait(timeout=10)
        if self.mounted:
            for umount in (["umount"], ["umount", "--lazy"]):  # lazy: something still holds it
                if subprocess.run([*umount, str(self.root)], capture_output=True).returncode == 0:
                    self.mounted = False
                    break
