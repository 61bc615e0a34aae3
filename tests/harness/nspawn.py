"""A Debian root booted under a real systemd for a test: a fresh overlay on a cached root
(scripts/install-test-root, scripts/install-deb-root), `systemd-nspawn --private-network -b`
(loopback only), commands run inside with `nsenter` as root. Used by tests/integration/test_deb.py
and tests/integration/test_install_readme.py: `booted()` is the whole life of one such root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Where scripts/install-test-root and scripts/install-deb-root keep their roots (and where each
# run's writable layer goes: the same file system, so the overlay mounts).
CACHE = Path(os.environ.get("ZIVMILTER_TEST_CACHE", "/var/cache/zivmilter-tests"))
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}
# Postfix's two debconf questions, answered as an admin would (`debconf-set-selections`).
POSTFIX_DEBCONF = (
    "postfix postfix/main_mailer_type select Internet Site\n"
    "postfix postfix/mailname string gateway.hospital.example\n"
)
BOOT_TIMEOUT = 60.0


class BootedRoot:
    """`lower` booted with a writable layer in `workdir`; the cache itself stays clean.

    `env` is added to ENV for every command; commands start in `cwd`.
    """

    def __init__(
        self,
        lower: Path,
        workdir: Path,
        machine: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "/root",
    ) -> None:
        self.lower = lower
        self.workdir = workdir
        self.machine = machine
        self.env = {**ENV, **(env or {})}
        self.cwd = cwd
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
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.pid1:
            assert self.nspawn.poll() is None, f"nspawn ended: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the container's PID 1 never appeared"
            self.pid1 = container_init(self.nspawn.pid)
            time.sleep(0.1)
        state = ""
        while state not in ("running", "degraded"):
            assert time.monotonic() < deadline, f"system never came up: {state!r}"
            time.sleep(0.3)
            state = self.run("systemctl is-system-running", check=False).stdout.strip()

    def run(
        self, script: str, *, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """bash -euo pipefail -c SCRIPT inside, as root, in `cwd`."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "--", "/usr/bin/env", "-i",
             *(f"{k}={v}" for k, v in self.env.items()),
             "bash", "-euo", "pipefail", "-c", f"cd {self.cwd}\n{script}"],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
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
                # systemd's clean poweroff; an init already gone leaves nspawn ending below.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid1, signal.SIGRTMIN + 4)
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


def container_init(nspawn_pid: int) -> int:
    """The container's PID 1 among nspawn's children, or 0 while there is none yet.

    nspawn first forks a helper (the "outer child") that makes the init and exits: the init is
    the child whose own PID namespace calls it 1. Taking the first child seen instead would
    sometimes (under load) take the helper, whose namespaces nsenter cannot enter once it ended.
    """
    depth = len(_nspids("self"))
    children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children")
    try:
        pids = children.read_text().split()
    except FileNotFoundError:
        return 0
    for pid in pids:
        nspids = _nspids(pid)
        if len(nspids) > depth and nspids[-1] == "1":
            return int(pid)
    return 0


def _nspids(pid: str) -> list[str]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


def check_cache(script: str) -> None:
    """Fail unless `scripts/SCRIPT --check` finds its cache current for this checkout (made
    from the same pyproject.toml, control file, README...): never a test on a stale root."""
    proc = subprocess.run(
        [str(REPO / "scripts" / script), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(
            proc.stderr.strip() or f"scripts/{script} --check: exit {proc.returncode}"
        )


@contextlib.contextmanager
def booted(
    lower: Path,
    machine: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str = "/root",
    prepare: Callable[[Path], object] | None = None,
) -> Iterator[BootedRoot]:
    """A fresh overlay on `lower` (a cache root, see check_cache), `prepare(root)` run on its
    files before the boot, booted; stopped and its layer removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{machine}-", dir=lower.parent))
    box = BootedRoot(lower, workdir, machine, env=env, cwd=cwd)
    try:
        box.mount()
        if prepare is not None:
            prepare(box.root)
        box.boot()
        yield box
    finally:
        box.stop()
        if not box.mounted:
            # The upper layer may hold a whole install (gcc, Python, a venv): rm is quicker than
            # shutil.rmtree with that many files, and stays on this file system.
            subprocess.run(["rm", "-rf", "--one-file-system", str(workdir)], check=False)
