"""What the harnesses' servers (postfix.py, sendmail.py, opendkim.py) have in common: a test
starts and stops one as a context manager, its process is reaped with a deadline, and a test
waits for a line in its log (the first match, or an error of the harness's own kind with the
log's tail).
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self


class Instance:
    """A server a test runs: `start()` returns it running, `stop()` ends it and cleans up (also
    after a failed start), `log()` is what it logged so far."""

    error: ClassVar[type[AssertionError]] = AssertionError
    name: ClassVar[str] = "server"
    _proc: subprocess.Popen[bytes] | None = None
    _output: Path | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log(self) -> str:
        return ""

    def output(self) -> str:
        """What the process wrote to its standard output and error."""
        if self._output is None:
            return ""
        try:
            return self._output.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @contextlib.contextmanager
    def _or_stopped(self) -> Iterator[None]:
        """A failure on the way up leaves nothing behind: stop(), then the error."""
        try:
            yield
        except BaseException:
            self.stop()
            raise

    def _spawn(
        self, argv: Sequence[str], output: Path, env: Mapping[str, str] | None = None
    ) -> None:
        """Run the server's process, its standard output and error into the file `output`."""
        self._output = output
        self._proc = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def _end_process(
        self, timeout: float, end: Callable[[subprocess.Popen[bytes]], object] | None = None
    ) -> None:
        """End the process if it still runs (with `end`, by default SIGTERM) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                (end or subprocess.Popen.terminate)(proc)
            reap(proc, timeout)

    def _wait_listening(self, port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
        """Until the process listens on host:port, watched in /proc/net/tcp and not by
        connecting (a probe connection would reach the server and leave noise in its log);
        `error` if it exits first, or does not listen within `timeout`."""
        deadline = time.monotonic() + timeout
        while not listening(host, port):
            if self._proc is not None and self._proc.poll() is not None:
                raise self.error(
                    f"{self.name} exited {self._proc.returncode}: {self.output()}\n{self.log()}"
                )
            if time.monotonic() > deadline:
                raise self.error(
                    f"{self.name} did not listen on {host}:{port}: {self.output()}\n{self.log()}"
                )
            time.sleep(0.02)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_log(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first match of `pattern` (multiline regex) in the log; fail the test on timeout."""
        return wait_for_log(self.log, pattern, timeout, self.error)


def listening(host: str, port: int) -> bool:
    """Whether a TCP socket listens on IPv4 host:port (this network namespace)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as table:
        next(table)  # header
        return any(
            fields[1] == want and fields[3] == "0A"  # 0A: TCP_LISTEN
            for fields in (line.split() for line in table)
        )


def reap(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a process that was told to end; kill it if it has not within `timeout`."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_log(
    read: Callable[[], str], pattern: str, timeout: float, error: type[Exception]
) -> re.Match[str]:
    """The first match of `pattern` (multiline regex) in `read()`; `error` on timeout."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        found = regex.search(text)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            tail = "\n".join(text.splitlines()[-40:])
            raise error(
                f"no log line matching {pattern!r} within {timeout:.0f}s; log tail:\n{tail}"
            )
        time.sleep(0.1)
