"""Key rotation while the gateway serves (issue 16 item 3), end to end with the real processes.

A private Postfix with the real `zivmilter run`, and the real `zivmilter portal`, on one SQLite
store. Messages are secured under the first key (access codes, a code remembered in the contact
book, email verification). Then the rotation of the README: a new key made current with the old
one in `store.previous_key_files`, both daemons restarted; a client keeps sending while
`zivmilter rekey` rewraps in small batches, and one message is accepted while rekey is known to
be half way. Once `zivmilter status --keys` says nothing depends on the old key, the old key
file is deleted and the daemons are restarted with the new key alone. Then every message's link
opens in the portal (over HTTP, as a recipient's browser would): access codes made under the
deleted key, the remembered one, codes mailed for email verification, the message stored
mid-rotation and one stored after.
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness.portal import PortalProcess
from tests.harness.postfix import REPO, PostfixInstance, free_port
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from tests.integration.test_portal_otp_race import code_mail, csrf, open_link

pytestmark = pytest.mark.integration

SINK_IP = "127.0.0.30"  # the "MX" of x.example: notifications and mailed codes arrive here
HOSTS = f"127.0.0.1 localhost\n{SINK_IP} x.example hospital.example\n"
CODE = "tulip-secret-42"
LINK = re.compile(rb"/m/([A-Za-z0-9_-]+)")


@dataclass
class Sent:
    marker: str
    rcpt: str
    verify: str  # "access_code" or "email"


@dataclass
class World:
    tmp: Path
    pf: PostfixInstance
    z: ZivmilterProcess
    portal: PortalProcess
    sink: Sink
    sent: list[Sent] = field(default_factory=list)


def zivmilter(*argv: str) -> subprocess.CompletedProcess[str]:
    """A zivmilter command as an admin types it (the real CLI, its own process)."""
    return subprocess.run(
        [sys.executable, "-m", "zivmilter", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    port = free_port()
    with bind_mounted("/etc/hosts", HOSTS), Sink(SINK_IP, 25) as sink:
        pf = PostfixInstance()
        z = attach(
            pf,
            workdir=tmp_path,
            config={
                "portal": {
                    "listen": f"127.0.0.1:{port}",
                    "base_url": f"http://127.0.0.1:{port}/",
                },
            },
        )
        portal = PortalProcess(z.config_file, port, tmp_path / "portal.log")
        with z, pf:
            portal.__enter__()
            w = World(tmp_path, pf, z, portal, sink)
            try:
                yield w
            finally:
                portal.__exit__()


def send(w: World, sent: Sent, code: bool = True, tries: int = 60) -> None:
    """One letter through Postfix, tried again on a temporary failure (a milter restarting)."""
    headers = f"To: {sent.rcpt}\r\nSubject: Results {sent.marker}\r\n"
    if sent.verify == "access_code" and code:
        headers += f"zivver-access-right: {sent.rcpt} access-code {CODE}\r\n"
    data = (
        "From: alice@hospital.example\r\nDate: Mon, 07 Dec 2026 09:00:00 +0100\r\n"
        f"Message-ID: <{sent.marker}@hospital.example>\r\n{headers}\r\nBODY {sent.marker}\r\n"
    ).encode()
    for _ in range(tries):
        try:
            with smtplib.SMTP("127.0.0.1", w.pf.smtp_port, timeout=60) as s:
                s.sendmail("alice@hospital.example", [sent.rcpt], data)
            w.sent.append(sent)
            return
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused, OSError) as exc:
            code_ = getattr(exc, "smtp_code", 450)
            assert not 500 <= code_ < 600, exc
            time.sleep(0.5)
    raise AssertionError(f"{sent.marker}: not accepted")


def link_of(w: World, rcpt: str, after: int = 0, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for got in w.sink.received[after:]:
            if got.rcpt_tos == (rcpt,):
                found = LINK.search(got.data)
                if found:
                    return found.group(1).decode()
        assert time.monotonic() < deadline, f"no notification for {rcpt}"
        time.sleep(0.1)


def opens(w: World, sent: Sent, token: str) -> None:
    """The recipient opens the link and proves who they are; the letter is shown."""
    with httpx.Client(base_url=w.portal.url, timeout=60, follow_redirects=True) as client:
        here = open_link(client, token)
        if sent.verify == "email":
            before = len(w.sink.received)
            form = csrf(client.get(here).text, "send")
            asked = client.post(here + "send", data={"csrf": form})
            assert asked.status_code == 200, asked.text
            code = code_mail(w.sink, sent.rcpt, before)
        else:
            code = CODE
        form = csrf(client.get(here).text, "verify")
        page = client.post(here + "verify", data={"csrf": form, "code": code})
        assert page.status_code == 200, (sent, page.status_code, page.text[:500])
        assert f"Results {sent.marker}" in page.text, (sent, page.text[:500])
        assert f"BODY {sent.marker}" in page.text, (sent, page.text[:500])  # a plain-text letter


def status_keys(w: World) -> tuple[int, dict[str, Any], str]:
    text = zivmilter("status", "--keys", "--config", str(w.z.config_file))
    as_json = zivmilter("status", "--keys", "--json", "--config", str(w.z.config_file))
    assert as_json.returncode == text.returncode, (text, as_json)
    return text.returncode, json.loads(as_json.stdout), text.stdout


def restart(w: World, store: dict[str, Any]) -> None:
    """New store keys in the config, then both daemons restarted (README "Key rotation")."""
    cfg = yaml.safe_load(w.z.config_file.read_text())
    cfg["store"].update(store)
    w.z.config_file.write_text(yaml.safe_dump(cfg))
    w.z.stop()
    w.z.start()
    w.portal.__exit__()
    w.portal.__enter__()


def test_rotate_while_serving_then_retire_the_old_key(world: World) -> None:
    w = world
    old_key, new_key = w.z.key_file, w.tmp / "store-2027.key"
    # Before: messages under the first key. Carol opens hers, so that the contact book
    # remembers her access code (a hash peppered by the first key).
    before = [Sent(f"pre-{i}", f"pre{i}@x.example", "access_code") for i in range(12)]
    before += [Sent(f"pre-mail-{i}", f"mail{i}@x.example", "email") for i in range(2)]
    carol = Sent("pre-carol", "carol@x.example", "access_code")
    for sent in [*before, carol]:
        send(w, sent)
    opens(w, carol, link_of(w, carol.rcpt))
    code, status, text = status_keys(w)
    assert code == 0 and status["retirable"] and len(status["keys"]) == 1, text
    first_id = status["current"]

    # The rotation: the new key current, the old one still read; both daemons restarted.
    assert zivmilter("keygen", str(new_key)).returncode == 0
    restart(w, {"key_file": str(new_key), "previous_key_files": [str(old_key)]})
    code, status, text = status_keys(w)
    new_id = status["current"]
    assert new_id != first_id and [k["id"] for k in status["keys"]] == [new_id, first_id]
    assert code == 1 and not status["retirable"], text
    old = next(k for k in status["keys"] if k["id"] == first_id)
    assert old["protects"]["message keys"] == len(before) + 1
    assert old["protects"]["access codes"] == 13
    assert old["protects"]["remembered access codes"] == 1
    assert "still depend on another key" in text

    # Mail flows while rekey runs in small batches.
    stop = threading.Event()
    loop_errors: list[BaseException] = []

    def flow() -> None:
        n = 0
        try:
            while not stop.is_set():
                send(w, Sent(f"flow-{n}", f"flow{n}@x.example", "access_code"))
                n += 1
                time.sleep(0.2)
        except BaseException as exc:  # reported by the test, not lost in the thread
            loop_errors.append(exc)

    sender = threading.Thread(target=flow)
    sender.start()
    rekey = subprocess.Popen(
        [sys.executable, "-m", "zivmilter", "rekey", "--config", str(w.z.config_file),
         "--new-key", str(new_key), "--batch", "2", "--pause", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert rekey.stderr is not None
        first_batch = rekey.stderr.readline()
        assert first_batch.startswith("rewrapped "), first_batch
        # Half way through the rotation: this message is stored under the new key while
        # older ones are still under the old key.
        mid = Sent("mid-rotation", "mid@x.example", "access_code")
        send(w, mid)
        assert rekey.poll() is None, "rekey ended before the mid-rotation message was stored"
        out, err = rekey.communicate(timeout=600)
    finally:
        stop.set()
        sender.join(120)
        if rekey.poll() is None:
            rekey.kill()
            rekey.wait()
    assert not loop_errors, loop_errors
    assert rekey.returncode == 0, (out, err)
    assert "nothing depends on a previous key: they can be removed" in out, out
    flowed = [s for s in w.sent if s.marker.startswith("flow-")]
    assert flowed, "no mail flowed during the rotation"
    code, status, text = status_keys(w)
    assert code == 0 and status["retirable"], text
    assert all(n == 0 for n in status["unknown"].values()), status
    old = next(k for k in status["keys"] if k["id"] == first_id)
    assert set(old["protects"].values()) == {0}, old
    current = next(k for k in status["keys"] if k["id"] == new_id)
    assert current["protects"]["access-code peppers"] == 1
    assert current["protects"]["message keys"] == len(w.sent)

    # The old key retired: its file deleted, the daemons restarted with the new key alone.
    old_key.unlink()
    restart(w, {"previous_key_files": []})
    code, status, text = status_keys(w)
    assert code == 0 and status["retirable"] and [k["id"] for k in status["keys"]] == [new_id]
    assert "nothing depends on a previous key" in text
    after = Sent("post-rotation", "post@x.example", "access_code")
    send(w, after)
    # Carol again, with no code in the message: the contact book's code (the old key's pepper).
    carol_again = Sent("carol-again", carol.rcpt, "access_code")
    seen = len(w.sink.received)
    send(w, carol_again, code=False)

    # Every message's link opens, with only the new key on the machine.
    for sent in w.sent:
        if sent is carol:
            continue  # opened before; her second message below
        opens(w, sent, link_of(w, sent.rcpt, after=seen if sent is carol_again else 0))
    assert "wrong key-encryption key" not in w.z.log() + w.portal.log.read_text()
