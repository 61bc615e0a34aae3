"""Reading attachments' text for the content rules (scope `attachment_text`), bounded in time and
memory: core/attachtext.py runs in a child process (multiprocessing's forkserver: a clean
process, never a fork of the milter's threads) that is killed when the message's time is up,
with its address space capped. An attachment that cannot be read, for whatever reason, is a
`Problem` for the log; the message is handled on without that text, never failed.

Used by the gateway (the milter) and by `explain` and `scan`, so all three see the same text.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from zivmilter import defaults
from zivmilter.core.attachtext import Unreadable, extract
from zivmilter.core.bodytext import Attachment, attachments_of_message
from zivmilter.core.config import ContentConfig
from zivmilter.core.content import Part, attachment_where

Extractor = Callable[[str, bytes, int], str]

# The reader processes fork from a server that has the readers imported once: a child costs a
# fork, not an import of pypdf.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["zivmilter.gateway.attachtext", "pypdf"])


@dataclass(frozen=True)
class Problem:
    """An attachment whose text was not read, and why (for the log: no name, no content)."""

    index: int  # 1-based, in the order of the message's attachments
    content_type: str
    size: int
    reason: str

    def __str__(self) -> str:
        return (
            f"attachment {self.index} ({self.content_type}, {self.size} bytes) not read for the"
            f" content rules: {self.reason}; the message is handled without its text"
        )


def attachment_parts(data: bytes, content: ContentConfig) -> tuple[list[Part], list[Problem]]:
    """The attachments' text of a whole message when the scope asks for it (else nothing)."""
    if not content.active or "attachment_text" not in content.scope:
        return [], []
    found = attachments_of_message(data, content.attachment_max_bytes)
    return read_attachments(found, content.attachment_max_bytes, content.attachment_timeout)


def read_attachments(
    attachments: Sequence[Attachment],
    max_bytes: int,
    timeout: float,
    extractor: Extractor = extract,
) -> tuple[list[Part], list[Problem]]:
    """The text of each readable attachment as a Part (where: "attachment NAME"), and a Problem
    for each one that was not read. At most `timeout` seconds for all of them together."""
    parts: list[Part] = []
    problems: list[Problem] = []
    todo: list[tuple[int, Attachment]] = []
    for n, att in enumerate(attachments, 1):
        if att.data is None or att.size > max_bytes:
            problems.append(
                Problem(n, att.content_type, att.size, f"larger than the limit {max_bytes} bytes")
            )
        elif att.kind is not None:
            todo.append((n, att))
    if not todo:
        return parts, problems
    results = _run(
        [(att.kind or "", att.data or b"") for _, att in todo], max_bytes, timeout, extractor
    )
    for (n, att), result in zip(todo, results, strict=True):
        if isinstance(result, str):
            if result.strip():
                parts.append(Part(attachment_where(att.filename), result))
        else:
            problems.append(Problem(n, att.content_type, att.size, result.reason))
    return parts, problems


@dataclass(frozen=True)
class _Failed:
    reason: str


def _run(
    jobs: list[tuple[str, bytes]], max_bytes: int, timeout: float, extractor: Extractor
) -> list[str | _Failed]:
    """Each job's text in one child process; what the deadline cuts off is a failure."""
    receive, send = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(send, jobs, max_bytes, extractor), daemon=True)
    out: list[str | _Failed] = []
    why = f"not read within {timeout:g} s (the reader was stopped)"
    try:
        child.start()
        send.close()
        # The bound is the reading's: the child says when it is there (a cold forkserver, the
        # first time, imports pypdf first; a server that never answers is given up on too).
        if not receive.poll(max(timeout, _START_SECONDS)):
            why = f"the reader did not start within {max(timeout, _START_SECONDS):g} s"
        else:
            receive.recv()
            deadline = time.monotonic() + timeout
            while len(out) < len(jobs):
                left = deadline - time.monotonic()
                if left <= 0 or not receive.poll(left):
                    break
                try:
                    kind, value = receive.recv()
                except EOFError:  # the child died: its memory cap, or a crash in a library
                    why = "the reader stopped (out of memory, or a crash)"
                    break
                out.append(value if kind == "text" else _Failed(value))
    except EOFError:
        why = "the reader stopped before it began"
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receive.close()
    return out + [_Failed(why)] * (len(jobs) - len(out))


def warm_up() -> None:
    """Start the reader's forkserver (and its imports) now, not for the first message."""
    _run([], 1, 1.0, extract)


_START_SECONDS = 20.0  # a reader that cannot even start (a broken forkserver) costs a message this


def _child(send: Connection, jobs: list[tuple[str, bytes]], max_bytes: int, fn: Any) -> None:
    _limit_memory()
    send.send(("ready", None))
    for kind, data in jobs:
        try:
            send.send(("text", fn(kind, data, max_bytes)))
        except Unreadable as exc:
            send.send(("problem", str(exc)))
    send.close()


def _limit_memory() -> None:
    try:
        import resource

        cap = defaults.CONTENT_ATTACHMENT_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, ValueError, OSError):  # not on this system: the time bound holds
        pass
