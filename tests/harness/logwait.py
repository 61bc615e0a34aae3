"""Waiting for a line in a server's log, for the harnesses that keep one (postfix.py,
sendmail.py): the first match, or an error of the harness's own kind with the log's tail.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable


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
