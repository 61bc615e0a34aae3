"""A one-time code lets exactly one session in, also when sessions race (issue 24).

Two real `zivmilter portal` processes (uvicorn, the real CLI) serve one SQLite store, as the
README allows on one machine. Each round stores a message for a recipient who verifies by email,
one session asks for a code (the portal mails it through re-injection to a local SMTP server,
where the test reads it), and four sessions (own cookie jars, split over both portals) submit
that right code at the same moment. Exactly one gets the message page; the others get the
ordinary "wrong code" answer, and the audit log has one `verified` event.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from email.message import EmailMessage
from email.policy import SMTP
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness.portal import PortalProcess
from tests.harness.postfix import REPO, free_port
from tests.harness.sink import Sink
from zivmilter import crypto
from zivmilter.store import NewMessage, NewRecipient, SqliteStore

pytestmark = pytest.mark.integration

ROUNDS = 10
SESSIONS = 4
WRONG = "That code is not right"


class World:
    def __init__(self, tmp: Path, sink: Sink, portals: list[PortalProcess], key_file: Path) -> None:
        self.tmp, self.sink, self.portals, self.key_file = tmp, sink, portals, key_file

    def store(self) -> SqliteStore:
        return SqliteStore.open(str(self.tmp / "store"), crypto.load_kek(str(self.key_file)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("otp-race")
    key_file = tmp / "store.key"
    subprocess.run(
        [sys.executable, "-m", "zivmilter", "keygen", str(key_file)],
        check=True, cwd=REPO, capture_output=True,
    )  # fmt: skip
    reinject = free_port()
    with Sink("127.0.0.1", reinject) as sink:
        portals = []
        for name in ("a", "b"):
            port = free_port()
            cfg = {
                "organization": {"name": "Hospital", "domains": ["hospital.example"]},
                "store": {"path": str(tmp / "store"), "key_file": str(key_file)},
                "reinject": {"host": "127.0.0.1", "port": reinject},
                "portal": {"base_url": f"http://127.0.0.1:{port}/", "listen": f"127.0.0.1:{port}"},
                "logging": {"level": "info"},
            }
            config_file = tmp / f"portal-{name}.yaml"
            config_file.write_text(yaml.safe_dump(cfg))
            portals.append(PortalProcess(config_file, port, tmp / f"portal-{name}.log"))
        with portals[0], portals[1]:
            yield World(tmp, sink, portals, key_file)


def message(marker: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = "sam@example.org"
    msg["Subject"] = f"Results {marker}"
    msg["Message-ID"] = f"<{marker}@hospital.example>"
    msg.set_content(f"BODY {marker}")
    return msg.as_bytes(policy=SMTP)


def csrf(html: str, action: str) -> str:
    m = re.search(
        r'action="[^"]*/' + re.escape(action) + r'"[^>]*>\s*<input type="hidden" name="csrf" '
        r'value="([^"]+)"',
        html,
    )
    assert m, f"no form for {action}"
    return m.group(1)


def shows_message(r: httpx.Response) -> bool:
    """The message page (headers, frame), as opposed to a verification page."""
    return r.status_code == 200 and 'id="subject"' in r.text and "/body" in r.text


def open_link(client: httpx.Client, token: str) -> str:
    """Open a personal link like a browser: the first page, then where it sends us."""
    first = client.get(f"/m/{token}")
    assert first.status_code == 200
    target = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', first.text)
    assert target
    return target.group(1)


def code_mail(sink: Sink, address: str, before: int) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for r in sink.received[before:]:
            if address in r.rcpt_tos:
                body = r.message().get_body(("plain",))
                assert body is not None
                (code,) = re.findall(r"\b\d{6}\b", body.get_content())
                return str(code)
        time.sleep(0.05)
    raise AssertionError(f"no code mail for {address}")


def at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response | BaseException]:
    """Run the calls in threads released together by a barrier: the same moment, as near as
    a test can make it."""
    barrier = threading.Barrier(len(calls))
    results: list[httpx.Response | BaseException] = [RuntimeError("no answer")] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # reported by the test, with the round
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_one_code_lets_exactly_one_of_four_racing_sessions_in(world: World) -> None:
    address = "sam@example.org"
    outcomes: list[list[str]] = []
    for n in range(ROUNDS):
        with closing(world.store()) as store:
            saved = store.save_message(
                NewMessage(
                    sender="alice@hospital.example",
                    subject=f"Results {n}",
                    content=message(f"race-{n}-{time.monotonic_ns()}"),
                    recipients=[
                        NewRecipient(address, 1, "x", "notification", "A7", verification="email")
                    ],
                )
            )
        token = saved.tokens[address]
        clients = [
            httpx.Client(base_url=world.portals[i % 2].url, timeout=60) for i in range(SESSIONS)
        ]
        try:
            heres = [open_link(c, token) for c in clients]
            before = len(world.sink.received)
            sent = clients[0].post(
                heres[0] + "send",
                data={"csrf": csrf(clients[0].get(heres[0]).text, "send")},
                follow_redirects=True,
            )
            assert sent.status_code == 200 and 'id="notice"' in sent.text, sent.text
            code = code_mail(world.sink, address, before)
            tokens = [csrf(c.get(h).text, "verify") for c, h in zip(clients, heres, strict=True)]

            results = at_once(
                [
                    partial(
                        c.post, h + "verify", data={"csrf": t, "code": code}, follow_redirects=True
                    )
                    for c, h, t in zip(clients, heres, tokens, strict=True)
                ]
            )
        finally:
            for c in clients:
                c.close()
        answers = []
        for r in results:
            assert isinstance(r, httpx.Response), f"round {n}: {r!r}"
            if shows_message(r):
                answers.append("in")
            elif r.status_code == 401 and WRONG in r.text:
                answers.append("wrong")
            else:
                answers.append(f"other {r.status_code}")
        with closing(world.store()) as store:
            verified = [e for e in store.events(saved.id) if e.event == "verified"]
        outcomes.append(answers)
        assert sorted(answers) == ["in", "wrong", "wrong", "wrong"], (n, outcomes)
        assert len(verified) == 1, (n, verified)
