"""A copy the MTA may have taken keeps its link, and a client's retry of a tempfailed message
hands over only what is missing (issue 15 items 1 and 2), through a real Postfix.

The re-injection listener is tests/harness/flaky_listener.py (refusing or hanging up on cue);
the copy kept in the client's own transaction goes through Postfix to a sink.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.harness.flaky_listener import FlakyListener
from tests.harness.postfix import PostfixInstance, free_port
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from zivmilter import crypto
from zivmilter.store import DB_NAME, SqliteStore

pytestmark = pytest.mark.integration

SINK_IP = "127.0.0.32"
HOSTS = f"127.0.0.1 localhost\n{SINK_IP} oldmail.example hospital.example\n"
RCPTS = [f"{n}@oldmail.example" for n in ("a", "b", "c", "d")]


def _data(msgid: str) -> bytes:
    # no Date: Postfix adds one, with the time of each try
    return (
        f"From: alice@hospital.example\r\nTo: {', '.join(RCPTS)}\r\nSubject: retry\r\n"
        f"Message-ID: <{msgid}@hospital.example>\r\n\r\nSECRET-BODY\r\n"
    ).encode()


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with bind_mounted("/etc/hosts", HOSTS), Sink(SINK_IP, 25) as s:
        yield s


def _send(pf: PostfixInstance, data: bytes) -> int:
    """The client's SMTP reply code to the message (250, or the 4xx it will retry on)."""
    try:
        with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=120) as s:
            s.sendmail("alice@hospital.example", RCPTS, data)
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code
    return 250


def _marked(z: ZivmilterProcess, count: int, timeout: float = 30) -> bool:
    """Whether `count` copies are recorded as taken by the MTA (read as another process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(z.store_path / DB_NAME, timeout=5)) as db:
            (n,) = db.execute("SELECT count(*) FROM handed_copies").fetchone()
        if n >= count:
            return True
        time.sleep(0.05)
    return False


def _opens(z: ZivmilterProcess, data: bytes) -> bool:
    token = re.search(rb"/m/([A-Za-z0-9_-]+)", data)
    assert token is not None
    store = SqliteStore.open(str(z.store_path), crypto.load_kek(str(z.key_file)))
    try:
        found = store.find_recipient_by_token(token.group(1).decode())
        return found is not None and store.open_content(found.message.id) is not None
    finally:
        store.close()


def _copies_per_recipient(listener: FlakyListener, sink: Sink, before: int) -> Counter[str]:
    got: Counter[str] = Counter()
    for taken in listener.received:  # a dropped copy may have been queued: it counts
        got.update(taken.rcpt_tos)
    for received in sink.received[before:]:
        got.update(received.rcpt_tos)
    return got


def test_a_listener_hanging_up_after_the_dot_leaves_a_working_link(sink: Sink) -> None:
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "drop") as listener:
        pf = PostfixInstance()
        z = attach(pf, reinject_port=port, facts={})
        with z, pf:
            before = len(sink.received)
            assert _send(pf, _data("e2e-drop")) // 100 == 4  # the client will retry
            # each re-injection session sends one copy and is dropped after its final dot
            assert listener.received
            for maybe in listener.received:
                assert maybe.dropped
                assert _opens(z, maybe.data), "a notification the MTA may have queued links nowhere"
            assert len(sink.received) == before


def test_a_retry_after_a_tempfail_delivers_each_recipient_once(sink: Sink) -> None:
    # The listener takes two re-injected notifications and refuses the third: the client gets
    # 4xx and sends the message again; every recipient gets one notification in all.
    port = free_port()
    with FlakyListener("127.0.0.1", port, lambda n: "452" if n == 2 else "250") as listener:
        pf = PostfixInstance()
        z = attach(pf, reinject_port=port, facts={})
        with z, pf:
            before = len(sink.received)
            assert _send(pf, _data("e2e-retry")) // 100 == 4
            assert _send(pf, _data("e2e-retry")) == 250
            sink.wait_for(before + 1)
            assert _copies_per_recipient(listener, sink, before) == dict.fromkeys(RCPTS, 1)
            for taken in listener.received:
                assert _opens(z, taken.data)
            assert _opens(z, sink.received[before].data)


def test_a_retry_after_the_milter_was_killed_delivers_each_recipient_once(sink: Sink) -> None:
    # kill -9 of the milter while its later re-injected copies wait for the listener's answer
    # (which then refuses them): the first is queued, the milter restarts, the client retries.
    # Every copy after the first is held (re-injection runs several sessions at once): one the
    # listener took in the moment of the kill, before the milter heard its 250, would go twice
    # (RFC 1047's window, which no client closes), and this test is about the marks.
    port = free_port()
    waiting, release = threading.Event(), threading.Event()

    def answer(n: int) -> str:
        if n >= 1 and not release.is_set():  # the first try's later copies; the retry's pass
            waiting.set()
            release.wait(60)
            return "452"
        return "250"

    with FlakyListener("127.0.0.1", port, answer) as listener:
        pf = PostfixInstance()
        z = attach(pf, reinject_port=port, facts={})
        with z, pf:
            before = len(sink.received)
            code: list[int] = []
            client = threading.Thread(target=lambda: code.append(_send(pf, _data("e2e-kill"))))
            client.start()
            assert waiting.wait(60)
            # the first copy's 250 is recorded before the kill (copies go over several
            # sessions at once: its mark and the next copy's arrival race otherwise)
            assert _marked(z, 1), "the first copy taken was never recorded"
            z.kill()
            release.set()
            client.join(120)
            assert code and code[0] // 100 == 4
            z.start()
            assert _send(pf, _data("e2e-kill")) == 250
            sink.wait_for(before + 1)
            assert _copies_per_recipient(listener, sink, before) == dict.fromkeys(RCPTS, 1)
            assert "a retry of stored message" in z.log()
