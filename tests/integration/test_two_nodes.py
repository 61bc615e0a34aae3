"""Two gateway nodes on one PostgreSQL, end to end (issue 14): what a site with two nodes relies on.

Node A and node B each have a private Postfix (its own SMTP and re-injection ports on loopback)
with its own `zivmilter run` (the real CLI), and a `zivmilter portal` (uvicorn, the real CLI) that
hands its mail to its node's Postfix. All four processes use one PostgreSQL database (a private
cluster, tests/harness/postgres.py), migrated with `zivmilter store migrate`, and copies of one
key file. Recipients' "MX" is a sink on its own 127.x address (a bind-mounted /etc/hosts): the
test reads notifications and emailed codes there, as a recipient would.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness.portal import PortalProcess
from tests.harness.postfix import REPO, PostfixInstance, free_port
from tests.harness.postgres import shared_cluster
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Received, Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from tests.integration.test_portal_otp_race import (
    WRONG,
    at_once,
    code_mail,
    csrf,
    open_link,
    shows_message,
)
from zivmilter import crypto, defaults
from zivmilter.store import Store
from zivmilter.store.postgresql import PostgresStore

pytestmark = pytest.mark.integration

RCPT_IP = "127.0.0.30"  # the "MX" of x.example: notifications and emailed codes arrive here
HOSTS = f"127.0.0.1 localhost\n{RCPT_IP} x.example hospital.example\n"
LINK = re.compile(r"https://secure\.hospital\.example/m/([A-Za-z0-9_-]+)")


@dataclass
class Node:
    name: str
    postfix: PostfixInstance
    milter: ZivmilterProcess
    portal: PortalProcess


@dataclass
class Site:
    nodes: list[Node]
    sink: Sink
    dsn: str
    key_file: Path

    def store(self) -> Store:
        return PostgresStore.open(self.dsn, crypto.load_kek(str(self.key_file)), pool_size=2)


def zivmilter(*argv: str) -> subprocess.CompletedProcess[str]:
    """A zivmilter command as an admin types it (the real CLI, its own process)."""
    return subprocess.run(
        [sys.executable, "-m", "zivmilter", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("two-nodes")
    cluster = shared_cluster()
    dsn = cluster.dsn(cluster.empty_database())
    key_file = tmp / "store.key"
    assert zivmilter("keygen", str(key_file)).returncode == 0
    with ExitStack() as stack:
        stack.enter_context(bind_mounted("/etc/hosts", HOSTS))
        sink = stack.enter_context(Sink(RCPT_IP, 25))
        nodes = []
        for name in ("a", "b"):
            workdir = tmp / f"node-{name}"
            workdir.mkdir()
            shutil.copyfile(key_file, workdir / "store.key")  # the same key file on each node
            (workdir / "store.key").chmod(0o600)
            store = {"backend": "postgresql", "dsn": dsn, "path": str(workdir / "store")}
            pf = PostfixInstance()
            milter = attach(pf, config={"store": store}, workdir=workdir)
            port = free_port()
            portal_cfg = {
                "organization": {"name": "Hospital", "domains": ["hospital.example"]},
                "store": {**store, "key_file": str(workdir / "store.key")},
                "reinject": {"host": "127.0.0.1", "port": pf.reinject_port},
                "portal": {"base_url": f"http://127.0.0.1:{port}/", "listen": f"127.0.0.1:{port}"},
                "logging": {"level": "info"},
            }
            portal_file = workdir / "portal.yaml"
            portal_file.write_text(yaml.safe_dump(portal_cfg))
            nodes.append(
                Node(name, pf, milter, PortalProcess(portal_file, port, workdir / "portal.log"))
            )
        migrated = zivmilter("store", "migrate", "--config", str(nodes[0].milter.config_file))
        assert migrated.returncode == 0, migrated.stderr
        assert "schema version" in migrated.stdout
        for node in nodes:
            stack.enter_context(node.milter)
            stack.enter_context(node.postfix)
            stack.enter_context(node.portal)
        yield Site(nodes, sink, dsn, key_file)


def letter(marker: str, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = to
    msg["Subject"] = f"Results {marker}"
    msg["Message-ID"] = f"<{marker}@hospital.example>"
    msg.set_content(f"BODY {marker}")
    return msg.as_bytes(policy=SMTP)


def send(node: Node, to: str, data: bytes) -> None:
    """One letter through `node`'s Postfix; an SMTP error (a 4xx when its milter is gone)
    raises. Accepted is accepted: a failing QUIT afterwards is not retried."""
    s = smtplib.SMTP("127.0.0.1", node.postfix.smtp_port, timeout=60)
    try:
        s.sendmail("alice@hospital.example", [to], data)
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def reply_code(exc: BaseException) -> int | None:
    """The SMTP reply code an error carries (None: the connection failed or dropped)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return min(code for code, _ in exc.recipients.values())
    return getattr(exc, "smtp_code", None)


def notification_for(sink: Sink, address: str, timeout: float = 60.0) -> Received:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in sink.received:
            if r.rcpt_tos == (address,) and LINK.search(r.data.decode("utf-8", "replace")):
                return r
        time.sleep(0.05)
    raise AssertionError(f"no notification for {address}")


def token_of(note: Received) -> str:
    body = note.message().get_body(("plain",))
    assert body is not None
    (token,) = LINK.findall(body.get_content())
    return str(token)


def stored(site: Site, marker: str, address: str) -> tuple[str, str]:
    """(store id, link token) of the letter `marker` sent to `address` through node A."""
    send(site.nodes[0], address, letter(marker, address))
    token = token_of(notification_for(site.sink, address))
    with closing(site.store()) as store:
        (msg,) = store.find_messages(f"<{marker}@hospital.example>")
    return msg.id, token


def ask_code(site: Site, client: httpx.Client, here: str, address: str) -> str:
    before = len(site.sink.received)
    sent = client.post(
        here + "send", data={"csrf": csrf(client.get(here).text, "send")}, follow_redirects=True
    )
    assert sent.status_code == 200 and 'id="notice"' in sent.text, sent.text
    return code_mail(site.sink, address, before)


def test_a_message_accepted_on_node_a_opens_through_node_b(site: Site) -> None:
    address = "sam@x.example"
    _, token = stored(site, "open-on-b", address)
    with httpx.Client(base_url=site.nodes[1].portal.url, timeout=60) as b:
        here = open_link(b, token)
        code = ask_code(site, b, here, address)  # mailed by portal B through node B's Postfix
        page = b.post(
            here + "verify",
            data={"csrf": csrf(b.get(here).text, "verify"), "code": code},
            follow_redirects=True,
        )
        assert shows_message(page), page.text
        assert "Results open-on-b" in page.text and "BODY open-on-b" in page.text


def test_wrong_codes_on_both_portals_at_once_lock_after_the_configured_count(site: Site) -> None:
    """Four times the limit of wrong codes, from as many sessions split over both portals, at
    the same moment: exactly LOCKOUT_AFTER are counted, the link locks once, on both nodes."""
    address = "kim@x.example"
    mid, token = stored(site, "lockout", address)
    count = 4 * defaults.LOCKOUT_AFTER
    clients = [
        httpx.Client(base_url=site.nodes[i % 2].portal.url, timeout=60) for i in range(count)
    ]
    try:
        heres = [open_link(c, token) for c in clients]
        code = ask_code(site, clients[0], heres[0], address)
        wrong_code = f"{(int(code) + 1) % 1_000_000:06d}"
        forms = [csrf(c.get(h).text, "verify") for c, h in zip(clients, heres, strict=True)]
        results = at_once(
            [
                partial(
                    c.post,
                    h + "verify",
                    data={"csrf": f, "code": wrong_code},
                    follow_redirects=True,
                )
                for c, h, f in zip(clients, heres, forms, strict=True)
            ]
        )
        answers = []
        for r in results:
            assert isinstance(r, httpx.Response), repr(r)
            answers.append(
                "wrong" if WRONG in r.text else "locked" if 'id="locked"' in r.text else r.text
            )
        assert set(answers) <= {"wrong", "locked"}, answers
        assert answers.count("wrong") <= defaults.LOCKOUT_AFTER, answers
        # either node now shows the link locked, with no form to try the right code on
        for c, h in zip(clients[:2], heres[:2], strict=True):
            page = c.get(h)
            assert 'id="locked"' in page.text and 'name="code"' not in page.text
    finally:
        for c in clients:
            c.close()
    with closing(site.store()) as store:
        (rec,) = store.recipients(mid)
        events = [e.event for e in store.events(mid)]
    assert rec.failed_attempts == defaults.LOCKOUT_AFTER
    assert rec.lockouts == 1 and rec.locked_until is not None
    assert events.count("verify-failed") == defaults.LOCKOUT_AFTER
    assert events.count("locked") == 1
    assert "verified" not in events


def test_a_revoke_on_node_a_is_final_on_node_b_at_once(site: Site) -> None:
    address = "lee@x.example"
    mid, token = stored(site, "revoke", address)
    with httpx.Client(base_url=site.nodes[1].portal.url, timeout=60) as b:
        here = open_link(b, token)
        code = ask_code(site, b, here, address)
        form = csrf(b.get(here).text, "verify")
        page = b.post(here + "verify", data={"csrf": form, "code": code}, follow_redirects=True)
        assert shows_message(page) and "BODY revoke" in page.text
        done = zivmilter("revoke", mid, "--config", str(site.nodes[0].milter.config_file))
        assert done.returncode == 0, done.stderr
        # the very next request on node B, in the session that was reading it
        after = b.get(here)
        assert "This message was withdrawn" in after.text and not shows_message(after)
        assert "BODY revoke" not in after.text
    with httpx.Client(base_url=site.nodes[1].portal.url, timeout=60) as fresh:  # a new visit
        again = fresh.get(open_link(fresh, token))
        assert "This message was withdrawn" in again.text and 'name="code"' not in again.text


def test_kill_9_of_node_a_milter_while_mail_flows_loses_nothing(site: Site) -> None:
    """A client sends through node A and, on a temporary failure, retries through node B (as an
    MUA or relay with two smart hosts does). node A's milter is killed with SIGKILL mid-flow:
    Postfix A tempfails, and every letter is notified exactly once at the sink."""
    a, b = site.nodes
    total = 30
    addresses = [f"flow{n}@x.example" for n in range(total)]
    retried: list[str] = []

    def deliver(n: int) -> None:
        data = letter(f"flow-{n}", addresses[n])
        for node in (a, b, b, b):
            try:
                send(node, addresses[n], data)
                return
            except (smtplib.SMTPException, OSError) as exc:
                code = reply_code(exc)
                assert code is None or 400 <= code < 500, f"{addresses[n]}: {exc!r}"
                retried.append(addresses[n])
        raise AssertionError(f"{addresses[n]}: not accepted by either node")

    errors: list[BaseException] = []

    def client(ns: range) -> None:
        try:
            for n in ns:
                deliver(n)
        except BaseException as exc:
            errors.append(exc)

    before = len(site.sink.received)
    threads = [threading.Thread(target=client, args=(range(i, total, 3),)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(site.sink.received) < before + total // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    a.milter.kill()
    try:
        for t in threads:
            t.join(120)
        assert not errors, errors
        got = site.sink.wait_for(before + total, timeout=90)[before:]
        time.sleep(2)  # anything late (a second copy) would arrive meanwhile
        got = site.sink.received[before:]
        per_address: dict[str, int] = {}
        for r in got:
            for rcpt in r.rcpt_tos:
                per_address[rcpt] = per_address.get(rcpt, 0) + 1
        assert per_address == dict.fromkeys(addresses, 1), per_address
        assert retried, "node A's milter was killed before any letter needed node B"
        for r in got:
            assert "BODY flow" not in r.data.decode("utf-8", "replace")  # secured, not leaked
        with closing(site.store()) as store:  # each notification's link opens a stored copy
            for r in got:
                rec = store.find_recipient_by_token(token_of(r))
                assert rec is not None and rec.address == r.rcpt_tos[0]
                assert rec.message.revoked_at is None
                content = store.open_content(rec.message.id)
                assert content is not None
                with content:
                    assert b"BODY flow" in content.read()
    finally:
        a.milter.start()  # the module's other tests may still use node A
