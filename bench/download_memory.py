"""Benchmark: memory a notification recipient's attachment download adds to the portal process
(issue 15 item 7; target: a 40 MB attachment with < 60 MB added).

    PYTHONPATH=$PWD .venv/bin/python bench/download_memory.py [--mb 40]

A throwaway store gets the same message twice: once saved as the gateway saves it now (its large
attachment kept apart, `mail.parts.large_attachments`) and once as before (the message whole:
the portal then decrypts and parses it for the download, the fallback for older stores). A
recipient of each verifies over HTTP as a browser does; then, for each, a fresh `zivmilter
portal` process (one worker, loopback) serves the download, and the figure is the kernel's peak
RSS of that process (VmHWM, reset through /proc/PID/clear_refs just before) less its RSS before.
Everything started is stopped by pid and removed on exit.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from zivmilter import crypto, defaults  # noqa: E402
from zivmilter.mail import parts  # noqa: E402
from zivmilter.store import NewMessage, NewPart, NewRecipient, SqliteStore  # noqa: E402

TARGET_MB = 60
CODE = "bench-code-1"


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def message(size: int) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "alice@hospital.example", "bob@example.net", "Scan"
    m["Message-ID"] = "<download-bench@hospital.example>"
    m.set_content("The scan is attached.\n")
    m.add_attachment(os.urandom(size), maintype="application", subtype="pdf", filename="scan.pdf")
    return m.as_bytes(policy=SMTP)


def save(store: SqliteStore, raw: bytes, kept_apart: bool) -> str:
    found = parts.large_attachments(io_of(raw), defaults.STORED_PART_MIN) if kept_apart else []
    saved = store.save_message(
        NewMessage(
            sender="alice@hospital.example",
            subject="Scan",
            content=raw,
            recipients=[
                NewRecipient(
                    "bob@example.net",
                    1,
                    "custom_access_right",
                    "notification",
                    "A3",
                    verification="access_code",
                    access_code=CODE,
                )
            ],
            parts=[NewPart(p.index, p.filename, p.content_type, p.data) for p in found],
        )
    )
    return saved.tokens["bob@example.net"]


def io_of(raw: bytes) -> io.BytesIO:
    return io.BytesIO(raw)


class Portal:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zivmilter",
                "portal",
                "--config",
                str(config),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the portal did not start: " + log.read_text()[-2000:])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def verify(base: str, token: str) -> tuple[str, str]:
    """Open the link and give the access code, as a browser does: (attachment path, cookie)."""
    jar = urllib.request.HTTPCookieProcessor()
    opener = urllib.request.build_opener(jar)
    first = opener.open(base + "/m/" + token).read().decode()
    found = re.search(r'url=(/r/\d+/)"', first)
    assert found, first
    path = found.group(1)
    page = opener.open(base + path).read().decode()
    csrf = re.search(
        r'action="[^"]*verify"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page
    )
    assert csrf, page
    data = urllib.parse.urlencode({"csrf": csrf.group(1), "code": CODE}).encode()
    request = urllib.request.Request(base + path + "verify", data=data, headers={"Origin": base})
    shown = opener.open(request).read().decode()
    link = re.search(r'href="[^"]*(/r/\d+/attachment/\d+)"', shown)
    assert link, "verification failed or no attachment listed"
    return link.group(1), "; ".join(f"{c.name}={c.value}" for c in jar.cookiejar)


def download(port: int, path: str, cookie: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers={"Cookie": cookie})
    response = conn.getresponse()
    assert response.status == 200, response.status
    digest = hashlib.sha256()
    size = 0
    while chunk := response.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    conn.close()
    return size, digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zivmilter-download-bench-"))
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        key = work / "store.key"
        subprocess.run([sys.executable, "-m", "zivmilter", "keygen", str(key)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        config = work / "zivmilter.yaml"
        config.write_text(
            "organization: {name: Bench Hospital, domains: [hospital.example]}\n"
            f"store: {{path: {work}/store, key_file: {key}}}\n"
            f'portal: {{base_url: "{base}/", listen: "127.0.0.1:{port}"}}\n'
            f"sms: {{backend: file, file: {work}/sms.log}}\nlogging: {{level: warning}}\n"
        )
        raw = message(args.mb * 1024 * 1024)
        store = SqliteStore.open(str(work / "store"), crypto.load_kek(str(key)))
        tokens = {kind: save(store, raw, kind == "kept apart") for kind in ("kept apart", "parsed")}
        store.close()
        log = work / "portal.log"
        portal = Portal(config, port, log)
        try:  # verifying shows the message page (parsed once): in a process not measured
            sessions = {kind: verify(base, token) for kind, token in tokens.items()}
        finally:
            portal.stop()
        print(f"attachment {args.mb} MB, message {len(raw) / 1e6:.1f} MB, {os.cpu_count()} CPU(s)")
        status = 0
        for kind, (path, cookie) in sessions.items():
            portal = Portal(config, port, log)
            try:
                urllib.request.urlopen(base + "/healthz").read()
                pid = portal.proc.pid
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
                before = status_mb(pid, "VmRSS")
                started = time.monotonic()
                size, digest = download(port, path, cookie)
                took = time.monotonic() - started
                added = status_mb(pid, "VmHWM") - before
            finally:
                portal.stop()
            assert size == args.mb * 1024 * 1024, size
            met = added < TARGET_MB
            if kind == "kept apart" and not met:
                status = 1
            print(
                f"  {kind:<10}  RSS before {before:6.1f} MB  added {added:6.1f} MB"
                f"  ({took:.1f} s, sha256 {digest[:12]})"
                + (f"  (target < {TARGET_MB} MB: {'met' if met else 'NOT MET'})"
                   if kind == "kept apart" else "  (the fallback: messages stored before)")
            )  # fmt: skip
        return status
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
