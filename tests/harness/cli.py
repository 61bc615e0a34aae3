"""Run the `zivmilter` command as an admin would: a real process from the repository root."""

from __future__ import annotations

import subprocess
import sys

from tests.harness.postfix import REPO


def zivmilter(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`zivmilter ARGS...`: exit status, stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "zivmilter", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
