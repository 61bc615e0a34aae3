#!/usr/bin/env python3
"""Crash test (issue 15): many messages of mixed kinds through a private Postfix with the real
`zivmilter run`, while faults strike at random every 1-4 s; then what each recipient got.

Kinds: notifications (1-3 recipients of a domain without direct delivery), direct copies (to
partner.example, over verified TLS), split messages (both) and a DSN (a recipient whose server
cannot meet the sender's TLS demand, next to a direct one). Clients retry a 4xx after a short
pause, as an MTA would (sooner). Faults: the milter killed -9 and restarted; the re-injection
listener taken away and brought back (master.cf toggled, `postfix reload`); with --smtpd-kills
also the re-injection smtpd processes killed -9, an smtpd crash: a copy whose final "." was
sent may then be queued without the milter hearing so, and it is sent again on the retry (a
duplicate with the same link: never a loss).

Counted per recipient at the receiving sinks: lost (nothing arrived), unprotected (the body's
canary reached a notification recipient), duplicated (more than one copy), dead links (a
notification whose link does not open the message in the store, as the portal would), and the
same for each message's DSN. Exit status 1 if anything was lost, unprotected or dead-linked.

    scripts/sandbox .venv/bin/python bench/chaos.py --messages 2000
    bench/chaos.py --messages 60 --pace 2 --json     # re-runs itself inside scripts/sandbox
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import smtplib
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import trustme  # noqa: E402

from tests.harness.postfix import PostfixInstance, free_port  # noqa: E402
from tests.harness.sandbox import bind_mounted, in_sandbox  # noqa: E402
from tests.harness.sink import Received, Sink, server_tls_context  # noqa: E402
from tests.harness.zivmilter import ZivmilterProcess, attach  # noqa: E402
from zivmilter import crypto  # noqa: E402
from zivmilter.store import SqliteStore  # noqa: E402

PLAIN_IP, TLS_IP = "127.0.0.50", "127.0.0.51"
HOSTS = (
    "127.0.0.1 localhost\n"
    f"{PLAIN_IP} oldmail.example hospital.example\n"
    f"{TLS_IP} partner.example\n"
    "127.0.0.52 weak.example\n"  # never reached: the policy fails its recipients
)
FACTS = {"transport": {"partner.example": "pkix", "weak.example": "tls"}}
CONFIG = {"policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}}}
SENDER = "alice@hospital.example"
LINK = re.compile(rb"https://secure\.hospital\.example/m/([A-Za-z0-9_-]+)")
KINDS = ("notification", "direct", "split", "dsn")


@dataclass
class Planned:
    number: int
    kind: str
    rcpts: list[str]  # every envelope recipient
    delivered: list[str]  # those that must receive one copy
    dsn: bool  # the sender must get one DSN about it

    @property
    def msgid(self) -> str:
        return f"chaos-{self.number}@hospital.example"

    @property
    def canary(self) -> str:
        return f"CANARY-{self.number}-7f3a"

    def data(self) -> bytes:
        extra = ""
        if self.dsn:
            extra = "zivver-direct-delivery: tls tls1.2 auth certificate-validation\r\n"
        return (
            f"From: Dr. Alice <{SENDER}>\r\nTo: {', '.join(self.rcpts)}\r\n"
            f"Subject: chaos {self.number}\r\nMessage-ID: <{self.msgid}>\r\n"
            f"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n{extra}"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{self.canary} the lab results\r\n"
        ).encode()


@dataclass
class Report:
    messages: int
    recipients: int  # copies expected: one per delivered recipient, one per DSN
    lost: int = 0
    unprotected: int = 0
    duplicated: int = 0
    relinked: int = 0  # of those, notifications with different links (the retry not recognized)
    dead_links: int = 0
    refused: int = 0  # messages the client got a 5xx for (none expected)
    client_retries: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def duplicate_rate(self) -> float:
        return self.duplicated / self.recipients if self.recipients else 0.0


def plan(count: int, rng: random.Random) -> list[Planned]:
    out = []
    for i in range(count):
        kind = rng.choice(KINDS)
        if kind == "notification":
            rcpts = [f"n{i}-{j}@oldmail.example" for j in range(rng.randint(1, 3))]
            out.append(Planned(i, kind, rcpts, rcpts, False))
        elif kind == "direct":
            rcpts = [f"d{i}-{j}@partner.example" for j in range(rng.randint(1, 2))]
            out.append(Planned(i, kind, rcpts, rcpts, False))
        elif kind == "split":
            rcpts = [
                f"d{i}-0@partner.example",
                f"n{i}-1@oldmail.example",
                f"n{i}-2@oldmail.example",
            ]
            out.append(Planned(i, kind, rcpts, rcpts, False))
        else:
            ok = f"d{i}-0@partner.example"
            out.append(Planned(i, kind, [ok, f"w{i}-1@weak.example"], [ok], True))
    return out


class Faults:
    """Strikes every 1-4 s (at random) until stopped; counts what it did."""

    def __init__(
        self, pf: PostfixInstance, z: ZivmilterProcess, rng: random.Random, smtpd_kills: bool
    ) -> None:
        self.pf, self.z, self.rng = pf, z, rng
        self.kinds = ["kill-milter", "toggle-listener"]
        if smtpd_kills:
            self.kinds.append("kill-reinject-smtpd")
        self.done: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.rng.uniform(1.0, 4.0)):
            kind = self.rng.choice(self.kinds)
            getattr(self, kind.replace("-", "_"))()
            self.done[kind] += 1

    def kill_milter(self) -> None:
        self.z.kill()
        time.sleep(self.rng.uniform(0.0, 0.5))
        self.z.start()

    def toggle_listener(self) -> None:
        pf = self.pf
        master = pf.config_dir / "master.cf"
        shipped = master.read_text()
        away = f"127.0.0.1:{free_port()} "
        master.write_text(shipped.replace(f"127.0.0.1:{pf.reinject_port} ", away))
        pf._postfix("reload")
        time.sleep(self.rng.uniform(0.3, 1.5))
        master.write_text(shipped)
        pf._postfix("reload")

    def kill_reinject_smtpd(self) -> None:
        """kill -9 of the smtpd processes of this Postfix's re-injection listener (by pid)."""
        mark = b"zivmilter-reinject"
        root = str(self.pf.directory).encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"smtpd") and mark in cmd and root in env:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
                    self.done["reinject-smtpd-processes-killed"] += 1


def send_all(
    port: int, messages: list[Planned], report: Report, lock: threading.Lock, pace: float
) -> None:
    """One client: each message until the MTA takes it (250), retrying 4xx and lost sessions;
    `pace` seconds between messages (at random up to twice that)."""
    for m in messages:
        time.sleep(random.uniform(0, 2 * pace))
        deadline = time.monotonic() + 300
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
                    s.sendmail(SENDER, m.rcpts, m.data())
                break
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code >= 500:
                    with lock:
                        report.refused += 1
                        report.details.append(f"{m.msgid}: refused {exc.smtp_code}")
                    break
            except (OSError, smtplib.SMTPException):
                pass
            with lock:
                report.client_retries += 1
            if time.monotonic() > deadline:
                raise SystemExit(f"{m.msgid}: not accepted within 300 s")
            time.sleep(random.uniform(0.3, 1.0))


def run(
    count: int,
    sessions: int,
    seed: int,
    pace: float = 0.0,
    faults: bool = True,
    smtpd_kills: bool = False,
) -> Report:
    rng = random.Random(seed)
    planned = plan(count, rng)
    report = Report(count, sum(len(m.delivered) + m.dsn for m in planned))
    ca = trustme.CA()
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(ca.cert_pem.bytes())
    os.chmod(f.name, 0o644)
    started = time.monotonic()
    try:
        with (
            bind_mounted("/etc/hosts", HOSTS),
            Sink(PLAIN_IP, 25) as plain,
            Sink(TLS_IP, 25, tls=server_tls_context(ca.issue_cert("partner.example"))) as tls,
        ):
            pf = PostfixInstance(tls_ca_file=f.name)
            z = attach(pf, facts=FACTS, config=CONFIG)
            with z, pf:
                chaos = Faults(pf, z, rng, smtpd_kills)
                if faults:
                    chaos.thread.start()
                lock = threading.Lock()
                clients = [
                    threading.Thread(
                        target=send_all,
                        args=(pf.smtp_port, planned[k::sessions], report, lock, pace),
                    )
                    for k in range(sessions)
                ]
                for c in clients:
                    c.start()
                for c in clients:
                    c.join()
                chaos.stop.set()
                if faults:
                    chaos.thread.join()
                report.faults = dict(chaos.done)
                _drain(pf, plain, tls, report)
                z.stop()
                store = SqliteStore.open(str(z.store_path), crypto.load_kek(str(z.key_file)))
                try:
                    _count(planned, plain.received + tls.received, store, report)
                finally:
                    store.close()
    finally:
        os.unlink(f.name)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _drain(pf: PostfixInstance, plain: Sink, tls: Sink, report: Report) -> None:
    """Until Postfix's queue is empty and the sinks have stopped receiving."""
    deadline = time.monotonic() + 120
    seen = -1
    while time.monotonic() < deadline:
        got = len(plain.received) + len(tls.received)
        if not pf.queue() and got == seen:
            return
        seen = got
        pf.flush()
        time.sleep(1.5)
    report.details.append(f"queue not empty after 120 s: {len(pf.queue())}")


def _count(
    planned: list[Planned], received: list[Received], store: SqliteStore, report: Report
) -> None:
    by_rcpt: dict[str, list[bytes]] = {}
    dsns: Counter[str] = Counter()
    for r in received:
        for rcpt in r.rcpt_tos:
            by_rcpt.setdefault(rcpt.lower(), []).append(r.data)
        if r.rcpt_tos == (SENDER,):
            found = re.search(rb"chaos-(\d+)@hospital\.example", r.data)
            if found:
                dsns[found.group(1).decode()] += 1
    for m in planned:
        for rcpt in m.delivered:
            copies = by_rcpt.get(rcpt, [])
            if not copies:
                report.lost += 1
                report.details.append(f"lost: {rcpt}")
            if len(copies) > 1:
                report.duplicated += len(copies) - 1
                links = {t.group(1) for t in map(LINK.search, copies) if t is not None}
                how = f", {len(links)} different links" if rcpt.endswith("oldmail.example") else ""
                report.relinked += len(links) > 1
                report.details.append(f"duplicated x{len(copies)}: {rcpt}{how}")
            if rcpt.endswith("@oldmail.example"):
                for data in copies:
                    if m.canary.encode() in data:
                        report.unprotected += 1
                        report.details.append(f"unprotected: {rcpt}")
                    token = LINK.search(data)
                    if token is None or not _opens(store, token.group(1).decode()):
                        report.dead_links += 1
                        report.details.append(f"dead link: {rcpt}")
        for rcpt in set(m.rcpts) - set(m.delivered):
            if by_rcpt.get(rcpt):
                report.unprotected += 1
                report.details.append(f"delivered to a failed recipient: {rcpt}")
        if m.dsn:
            n = dsns[str(m.number)]
            if n == 0:
                report.lost += 1
                report.details.append(f"lost: the DSN of {m.msgid}")
            report.duplicated += max(0, n - 1)
            if n > 1:
                report.details.append(f"duplicated x{n}: the DSN of {m.msgid}")


def _opens(store: SqliteStore, token: str) -> bool:
    """What the portal checks before it shows a notification's message."""
    found = store.find_recipient_by_token(token)
    return found is not None and store.open_content(found.message.id) is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--pace", type=float, default=0.0, help="mean seconds between a client's messages"
    )
    parser.add_argument(
        "--smtpd-kills", action="store_true", help="also kill -9 the re-injection smtpds"
    )
    parser.add_argument("--no-faults", action="store_true", help="the same run, undisturbed")
    parser.add_argument("--json", action="store_true", help="the report as one JSON line")
    args = parser.parse_args()
    if not in_sandbox():
        me = str(Path(__file__).resolve())
        os.execv(str(REPO / "scripts" / "sandbox"), ["sandbox", sys.executable, me, *sys.argv[1:]])
    report = run(
        args.messages, args.sessions, args.seed, args.pace, not args.no_faults, args.smtpd_kills
    )
    if args.json:
        print(json.dumps({**asdict(report), "duplicate_rate": report.duplicate_rate}))
    else:
        for line in report.details[:50]:
            print(line)
        print(
            f"{report.messages} messages, {report.recipients} recipient copies expected, "
            f"faults {report.faults}, client retries {report.client_retries}, "
            f"{report.seconds} s\nlost {report.lost}, unprotected {report.unprotected}, "
            f"duplicated {report.duplicated} ({report.duplicate_rate:.3%}; with new links "
            f"{report.relinked}), "
            f"dead links {report.dead_links}, refused {report.refused}"
        )
    return 1 if report.lost or report.unprotected or report.dead_links or report.refused else 0


if __name__ == "__main__":
    sys.exit(main())
