"""Run the `zivmilter` command as an admin would: a real process from the repository root, or
(for the commands that do their job and exit) `cli.main` in this process, which shows the same
exit status and output without starting Python once per case."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
from collections.abc import Iterator

from tests.harness.postfix import REPO
from zivmilter import cli


def zivmilter(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`zivmilter ARGS...`: exit status, stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "zivmilter", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def zivmilter_in_process(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`zivmilter ARGS...` through `cli.main(argv)`, as `python -m zivmilter` runs it: the exit
    status, and what it printed on stdout and stderr. Not for the commands that serve (`run`,
    `portal`): those get a process of their own."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _stdin(stdin),
        _logging_restored(),
    ):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse: usage errors, --help, --version
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                code = 1
            else:
                code = exc.code or 0
    return subprocess.CompletedProcess(["zivmilter", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)  # not a terminal, as with `... | zivmilter`
    try:
        yield
    finally:
        sys.stdin = saved


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """A command that sets up logging for its process (logsetup) does not keep it for the
    tests that follow."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
