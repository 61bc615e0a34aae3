"""What integration tests need from scripts/sandbox: knowing they are inside it, and swapping a
system file (/etc/hosts, /etc/resolv.conf) for the length of a test.

The sandbox's mount namespace is private, so a bind mount made here never reaches the host.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def in_sandbox() -> bool:
    """True inside scripts/sandbox: flagged, and in another mount namespace than its caller."""
    host_mnt = os.environ.get("ZIVMILTER_SANDBOX_HOST_MNT")
    if os.environ.get("ZIVMILTER_SANDBOX") != "1" or not host_mnt:
        return False
    return os.readlink("/proc/self/ns/mnt") != host_mnt


@contextmanager
def bind_mounted(target: str, content: str) -> Iterator[None]:
    """Show `content` at `target` (an existing file) until the block ends."""
    if not in_sandbox():
        # Refuse rather than replace the host's own /etc/hosts.
        raise AssertionError(f"will not bind-mount over {target} outside scripts/sandbox")
    fd, source = tempfile.mkstemp(prefix="zivmilter-mount-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(source, 0o644)  # read by Postfix daemons that run as the postfix user
        subprocess.run(["mount", "--bind", source, target], check=True, capture_output=True)
        try:
            yield
        finally:
            subprocess.run(["umount", target], check=True, capture_output=True)
    finally:
        os.unlink(source)
