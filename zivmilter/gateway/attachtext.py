"""Reading attachments' text for the content rules (scope `attachment_text`), bounded in time and
memory: core/attachtext.py runs in a child process (multiprocessing's forkserver: a clean
process, never a fork of the milter's threads) that is killed when the message's time is up,
with its address space capped. An attachment that cannot be read (damaged, too large, too slow,
the reader's memory cap) is a `Problem` for the log; the message is handled on without that
text, never failed. A reader that does not start at all is a fault of this host, not of the
message: `ReaderError`, and the milter tempfails rather than pass the message unread.

Used by the gateway (the milter) and by `explain` and `scan`, so all three see the same text.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from zivmilter import defaults
from zivmilter.core.attachtext import Unreadable, extract
from zivmilter.core.bodytext import Attachment, attachments_of_message
from zivmilter.core.config import ContentConfig
from zivmilter.core.content import Part, attachment_where
from zivmilter.errors import ReaderError

Extractor = Callable[[str, bytes, int], str]

log = logging.getLogger("zivmilter.gateway")

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
    for each one that was not read. At most `timeout` seconds for all of them together.

    Raises ReaderError when the reader process does not start."""
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
    """Each job's text in one child process; what the deadline cuts off is a failure. A child
    that is not ready to read is no attachment's failure: ReaderError."""
    receive, send = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(send, jobs, max_bytes, extractor), daemon=True)
    out: list[str | _Failed] = []
    why = f"not read within {timeout:g} s (the reader was stopped)"
    try:
        _start(child, receive, send, max(timeout, _START_SECONDS))
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
    finally:
        if child.pid is not None:  # None: it never started, nothing to stop
            if child.is_alive():
                child.kill()
            child.join(5)
        send.close()
        receive.close()
    return out + [_Failed(why)] * (len(jobs) - len(out))


def _start(child: BaseProcess, receive: Connection, send: Connection, wait: float) -> None:
    """Start the child and wait until it says it is ready: the bound is the reading's (a cold
    forkserver, the first time, imports pypdf first). A server that cannot run, a child that
    dies or never answers before that is a ReaderError."""
    try:
        child.start()
        send.close()  # the child's end: EOF here once the child is gone
        if not receive.poll(wait):
            raise ReaderError(f"the attachments' text reader did not start within {wait:g} s")
        receive.recv()
    except EOFError:
        raise ReaderError("the attachments' text reader stopped before it was ready") from None
    except OSError as exc:
        raise ReaderError(f"the attachments' text reader could not be started: {exc}") from exc


def warm_up() -> None:
    """Start the reader's forkserver (and its imports) now, not for the first message; a reader
    that does not start is said at once, not only by the first message it tempfails."""
    try:
        _run([], 1, 1.0, extract)
    except ReaderError as exc:
        log.error("%s: messages with attachments to read are tempfailed until it starts", exc)


# A reader that cannot even start (a broken forkserver) holds a message this long, then the
# message is tempfailed (ReaderError): it waits in the MTA's queue, never passes unread.
_START_SECONDS = 20.0


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
