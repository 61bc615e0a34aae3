"""Faults never lose or leak a message (SPEC 10): the client gets 4xx and Postfix keeps nothing
half-done when the milter dies, the re-injection listener is down, or the store is unwritable.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import smtplib
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.postfix import PostfixInstance, free_port
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from zivmilter import crypto
from zivmilter.store import SqliteStore

pytestmark = pytest.mark.integration

SINK_IP = "127.0.0.31"
HOSTS = f"127.0.0.1 localhost\n{SINK_IP} oldmail.example x.example hospital.example\n"
DATA = (
    b"From: alice@hospital.example\r\nTo: a@oldmail.example, b@oldmail.example\r\n"
    b"Subject: fault\r\n\r\nSECRET-BODY\r\n"
)


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with bind_mounted("/etc/hosts", HOSTS), Sink(SINK_IP, 25) as s:
        yield s


def _setup(reinject_port: int | None = None) -> tuple[PostfixInstance, ZivmilterProcess]:
    pf = PostfixInstance()
    return pf, attach(pf, reinject_port=reinject_port, facts={})


def _send_expect_4xx(pf: PostfixInstance, rcpts: list[str]) -> smtplib.SMTPResponseException:
    with (
        smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s,
        pytest.raises(
            (smtplib.SMTPDataError, smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused)
        ) as info,
    ):
        s.sendmail("alice@hospital.example", rcpts, DATA)
    exc = info.value
    code = exc.smtp_code if isinstance(exc, smtplib.SMTPResponseException) else 0
    assert 400 <= code < 500, f"expected a 4xx, got {exc}"
    assert isinstance(exc, smtplib.SMTPResponseException)
    return exc


def _nothing_kept(pf: PostfixInstance, sink: Sink, before: int) -> None:
    time.sleep(1.5)
    assert pf.queue() == [], "Postfix kept a half-done message"
    assert len(sink.received) == before, "something was delivered"


def test_reinjection_listener_down_tempfails(sink: Sink) -> None:
    closed = free_port()  # nothing listens there
    pf, z = _setup(reinject_port=closed)
    with z, pf:
        before = len(sink.received)
        exc = _send_expect_4xx(pf, ["a@oldmail.example", "b@oldmail.example"])
        assert re.search(rb"4\.3\.0 zivmilter: temporary failure, ref [0-9a-f]{8}", exc.smtp_error)
        ref = re.search(rb"ref ([0-9a-f]{8})", exc.smtp_error).group(1).decode()  # type: ignore[union-attr]
        assert f"ref {ref}" in z.log() and "re-injection" in z.log()
        _nothing_kept(pf, sink, before)
        # nothing stays in the store for a message the client will send again
        db = sqlite3.connect(str(z.store_path / "store.sqlite3"))
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM blobs").fetchone()[0] == 0
        db.close()
        assert not list((z.store_path / "blobs").rglob("*.zmb"))


def test_reinjection_refused_part_way_keeps_the_links_already_sent(sink: Sink) -> None:
    # The listener takes the first re-injected notification and refuses the next: the client
    # gets 4xx and will retry, but the notification already queued must keep a working link.
    port = free_port()
    with Sink("127.0.0.1", port, refuse_after=1) as listener:
        pf, z = _setup(reinject_port=port)
        with z, pf:
            before = len(sink.received)
            rcpts = ["a@oldmail.example", "b@oldmail.example", "c@oldmail.example"]
            _send_expect_4xx(pf, rcpts)
            (taken,) = listener.wait_for(1)
            token = re.search(rb"/m/([A-Za-z0-9_-]+)", taken.data)
            assert token is not None
            _nothing_kept(pf, sink, before)
            store = SqliteStore.open(str(z.store_path), crypto.load_kek(str(z.key_file)))
            try:
                found = store.find_recipient_by_token(token.group(1).decode())
                assert found is not None and found.address == taken.rcpt_tos[0]
            finally:
                store.close()
            assert "re-injection failed after 1 accepted" in z.log()


def test_store_disk_full_tempfails(sink: Sink) -> None:
    # Mail up to 256 KiB is kept in the store's database: a full disk there must tempfail.
    pf, z = _setup()
    z.store_path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(z.store_path)], check=True
    )
    try:
        with z, pf:
            filler = z.store_path / "filler"
            with filler.open("wb") as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            before = len(sink.received)
            exc = _send_expect_4xx(pf, ["a@oldmail.example"])
            assert b"4.3.0 zivmilter: temporary failure" in exc.smtp_error
            _nothing_kept(pf, sink, before)
            filler.unlink()
            # with room again, the same message goes through, and nothing of the failed try stays
            with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
                assert s.sendmail("alice@hospital.example", ["a@oldmail.example"], DATA) == {}
            sink.wait_for(before + 1)
            db = sqlite3.connect(str(z.store_path / "store.sqlite3"))
            assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
            db.close()
    finally:
        subprocess.run(["umount", "-l", str(z.store_path)], check=True)
        shutil.rmtree(z.dir, ignore_errors=True)


def test_blob_folder_unwritable_tempfails(sink: Sink) -> None:
    # Larger mail gets a blob file of its own: a folder that refuses it must tempfail.
    large = DATA + (b"y" * 76 + b"\r\n") * 4000  # 312 KB: above the 256 KiB kept inline
    pf, z = _setup()
    with z, pf:
        blobs = z.store_path / "blobs"
        blobs.mkdir(exist_ok=True)
        # root ignores file modes: a read-only bind mount really refuses the write
        subprocess.run(["mount", "--bind", str(blobs), str(blobs)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(blobs)], check=True)
        try:
            before = len(sink.received)
            with (
                smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s,
                pytest.raises(smtplib.SMTPDataError) as info,
            ):
                s.sendmail("alice@hospital.example", ["a@oldmail.example"], large)
            assert info.value.smtp_code == 451
            _nothing_kept(pf, sink, before)
        finally:
            subprocess.run(["umount", str(blobs)], check=True)
        # and once the store is writable again, the same message goes through
        with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
            assert s.sendmail("alice@hospital.example", ["a@oldmail.example"], large) == {}
        sink.wait_for(before + 1)
        assert len(list(blobs.rglob("*.zmb"))) == 1


def test_milter_killed_mid_transaction(sink: Sink) -> None:
    pf, z = _setup()
    with z, pf:
        before = len(sink.received)
        with socket.create_connection(("127.0.0.1", pf.smtp_port), timeout=30) as conn:
            f = conn.makefile("rwb")

            def cmd(line: bytes) -> bytes:
                f.write(line + b"\r\n")
                f.flush()
                reply = b""
                while True:
                    got = f.readline()
                    reply += got
                    if got[3:4] != b"-":
                        return reply

            f.readline()
            assert cmd(b"EHLO client.test").startswith(b"250")
            assert cmd(b"MAIL FROM:<alice@hospital.example>").startswith(b"250")
            assert cmd(b"RCPT TO:<a@oldmail.example>").startswith(b"250")
            assert cmd(b"DATA").startswith(b"354")
            f.write(DATA[: len(DATA) // 2])
            f.flush()
            z.kill()  # the milter dies with the transaction half sent
            f.write(DATA[len(DATA) // 2 :] + b".\r\n")
            f.flush()
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            assert reply[:1] == b"4", reply
        _nothing_kept(pf, sink, before)
        assert not Path(pf.directory).joinpath("queue", "incoming").exists() or not any(
            Path(pf.directory, "queue", "incoming").iterdir()
        )


def test_temporary_folder_full_tempfails_at_the_end_of_data(
    sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message above milter.spool_threshold is spooled to the temporary folder; a full one
    # fails the spool mid-body. The client must get zivmilter's 4xx with its reference at the
    # end of data, not Postfix's after the milter timeout (libmilter then answered nothing).
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(tmp)], check=True)
    try:
        pf = PostfixInstance(extra={"milter_content_timeout": "120s"})
        z = attach(pf, facts={}, config={"milter": {"spool_threshold": 4096}})
        monkeypatch.setenv("TMPDIR", str(tmp))  # the milter's temporary folder, and only its
        with z:
            monkeypatch.delenv("TMPDIR")
            with pf:
                before = len(sink.received)
                large = DATA + (b"z" * 76 + b"\r\n") * 8000  # 624 KB: more than the folder holds
                with (
                    smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=180) as s,
                    pytest.raises(smtplib.SMTPDataError) as info,
                ):
                    s.sendmail("alice@hospital.example", ["a@oldmail.example"], large)
                assert info.value.smtp_code == 451
                error = info.value.smtp_error
                assert re.search(rb"4\.3\.0 zivmilter: temporary failure, ref [0-9a-f]{8}", error)
                ref = re.search(rb"ref ([0-9a-f]{8})", error).group(1).decode()  # type: ignore[union-attr]
                assert f"spooling the message failed; tempfail at its end, ref {ref}" in z.log()
                assert "No space left on device" in z.log()
                _nothing_kept(pf, sink, before)
                db = sqlite3.connect(str(z.store_path / "store.sqlite3"))
                assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
                db.close()
    finally:
        subprocess.run(["umount", "-l", str(tmp)], check=True)
