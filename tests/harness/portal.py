"""The guest portal's test stack, shared by the browser tests (test_portal_browser, _a11y,
_sent_browser, _branding) and the race test: a private Postfix with `zivmilter run`, a receiving
server for the notifications and code mails, a stand-in SMS provider (the webhook's HTTP server),
the real `zivmilter portal` process, and a headless Chromium (Playwright, system Chromium).

A test module builds its `world` fixture with `portal_world(config)` and imports the `browser`
fixture from here.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import smtplib
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from email.message import EmailMessage
from email.policy import SMTP
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from tests.harness.postfix import REPO, PostfixInstance, free_port
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Received, Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from zivmilter import crypto
from zivmilter.store import SqliteStore

MAIL_IP = "127.0.0.30"
HOSTS = f"127.0.0.1 localhost\n{MAIL_IP} oldmail.example x.example hospital.example\n"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = REPO / "test-artifacts" / "portal"
CODE = "tulip-secret-42"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"
SENDER = "alice@hospital.example"
PASSWORD = "correct horse battery staple"


def png(width: int = 8, height: int = 8) -> bytes:
    """A real (red) PNG, so the browser can decode the inline image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class _Hook(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[dict[str, str], dict[str, Any]]]] = []
    cond = threading.Condition()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.cond:
            self.calls.append((dict(self.headers), json.loads(body)))
            self.cond.notify_all()
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class SmsProvider:
    """A local stand-in for an SMS provider's JSON API: what the portal's webhook posts."""

    def __init__(self) -> None:
        self.handler: type[_Hook] = type(
            "Hook", (_Hook,), {"calls": [], "cond": threading.Condition()}
        )
        self.server = HTTPServer(("127.0.0.1", 0), self.handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/messages"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> SmsProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(
        self, count: int, timeout: float = 20
    ) -> list[tuple[dict[str, str], dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        with self.handler.cond:
            while len(self.handler.calls) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"SMS provider: expected {count} messages"
                self.handler.cond.wait(left)
            return list(self.handler.calls)

    def webhook(self, auth_header: str | None = None) -> dict[str, Any]:
        """The `sms` configuration that sends the portal's codes here."""
        hook: dict[str, Any] = {"url": self.url}
        if auth_header is not None:
            hook["auth_header"] = auth_header
        hook["body"] = '{"recipient": {{ phone }}, "body": {{ text }}}'
        return {"backend": "webhook", "webhook": hook}


class PortalProcess:
    """`zivmilter portal --config FILE` as its own process, like systemd runs it."""

    def __init__(self, config_file: Path, port: int, log: Path) -> None:
        self.config_file, self.port, self.log = config_file, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PortalProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zivmilter", "portal", "--config", str(self.config_file)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                assert time.monotonic() < deadline, (
                    "portal did not come up:\n" + self.log.read_text()
                )
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class World:
    def __init__(
        self, pf: PostfixInstance, z: ZivmilterProcess, sink: Sink, sms: SmsProvider, port: int
    ) -> None:
        self.pf, self.z, self.sink, self.sms, self.port = pf, z, sink, sms, port
        self.link = re.compile(rf"http://127\.0\.0\.1:{port}/m/[A-Za-z0-9_-]+")

    def send(self, msg: EmailMessage, rcpts: list[str], sender: str = SENDER) -> None:
        with smtplib.SMTP("127.0.0.1", self.pf.smtp_port, timeout=60) as s:
            assert s.sendmail(sender, rcpts, msg.as_bytes(policy=SMTP)) == {}

    def mail_for(self, address: str, before: int, what: str = "") -> Received:
        """The first message for `address` that arrived after `before` messages (and has
        `what` in it)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for r in self.sink.received[before:]:
                if address in r.rcpt_tos and what.encode() in r.data:
                    return r
            time.sleep(0.1)
        raise AssertionError(f"no mail for {address} containing {what!r}")

    def notification_link(self, address: str, before: int) -> tuple[str, str]:
        note = self.mail_for(address, before, "/m/")
        body = note.message().get_body(("plain",))
        assert body is not None
        text = body.get_content()
        (link,) = self.link.findall(text)
        return link, text

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zivmilter", *args, "--config", str(self.z.config_file)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def store(self) -> SqliteStore:
        return SqliteStore.open(str(self.z.store_path), crypto.load_kek(str(self.z.key_file)))


@contextlib.contextmanager
def open_store(world: World) -> Iterator[SqliteStore]:
    """The store as the milter and portal see it, opened from the test."""
    store = world.store()
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def portal_world(
    config: Callable[[SmsProvider], dict[str, Any]] | dict[str, Any] | None = None,
    *,
    hosts: str = HOSTS,
    senders: Sequence[str] = (SENDER,),
) -> Iterator[World]:
    """The whole stack, with `config` (or what it makes of the SMS provider) beside the portal's
    address; `senders` get active sender accounts (SPEC 7: only an active account may submit).
    No facts file: the milter's live facts (store accounts, contact book)."""
    port = free_port()
    with bind_mounted("/etc/hosts", hosts), Sink(MAIL_IP, 25) as sink, SmsProvider() as sms:
        pf = PostfixInstance()
        extra = config(sms) if callable(config) else (config or {})
        portal = {"base_url": f"http://127.0.0.1:{port}/", "listen": f"127.0.0.1:{port}"}
        z = attach(pf, config={"portal": portal, **extra})
        with z, pf, PortalProcess(z.config_file, port, z.dir / "portal.log"):
            w = World(pf, z, sink, sms, port)
            if senders:
                with open_store(w) as store:
                    for sender in senders:
                        store.add_account(sender, "sender")
            yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def html_message(
    to: str, extra: dict[str, str], text: str, html: str, tag: str = "portal"
) -> EmailMessage:
    """A message from alice with a text and an HTML part (`html` may show the inline image
    `cid:scan@hospital`, a real PNG) and a PDF attachment, results.pdf."""
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = to
    msg["Subject"] = "Lab results"
    msg["Message-ID"] = f"<{tag}-{time.monotonic_ns()}@hospital.example>"
    for name, value in extra.items():
        msg[name] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    part = msg.get_body(("html",))
    assert part is not None
    part.add_related(png(), maintype="image", subtype="png", cid="<scan@hospital>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="results.pdf")
    return msg


def plain_message(to: str, marker: str, extra: dict[str, str] | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = to
    msg["Subject"] = f"Appointment {marker}"
    msg["Message-ID"] = f"<{marker}-{time.monotonic_ns()}@hospital.example>"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content(f"{marker} see you on Tuesday")
    return msg


def open_link(page: Any, link: str) -> None:
    page.goto(link)
    page.wait_for_url(re.compile(r"/r/\d+/$"))
    assert "/m/" not in page.url, "the token is gone from the address bar"


def totp(secret: bytes, at: float) -> str:
    """The authenticator app's code at `at`."""
    return TOTP(secret, 6, SHA1(), 30).generate(at).decode()


def open_invite(world: World, page: Any, sender: str) -> bytes:
    """Open the enrolment link `zivmilter account invite` prints; the authenticator secret the
    page shows."""
    invite = world.cli("account", "invite", sender)
    assert invite.returncode == 0, invite.stderr
    (url,) = re.findall(r"http://\S+/sent/invite/\S+", invite.stdout)
    page.goto(url)
    page.wait_for_url(re.compile(r"/sent/invite/$"))
    return shown_secret(page)


def shown_secret(page: Any) -> bytes:
    """The authenticator secret an enrolment page shows (base32, in groups)."""
    b32 = page.inner_text("#secret").replace(" ", "")
    return base64.b32decode(b32 + "=" * (-len(b32) % 8))


def fill_enrolment(page: Any, secret: bytes, password: str, again: str) -> None:
    """Fill in the enrolment form (password twice, the authenticator's code) and send it."""
    page.fill("#password", password)
    page.fill("#password2", again)
    page.fill("#totp", totp(secret, time.time()))
    page.click("#enrol")
