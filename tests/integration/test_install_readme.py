"""The README's "Installing with your Postfix", followed as written in a clean Debian 12 booted
under a real systemd (issue 27): its `sh` blocks (tests/harness/readme.py reads them from
README.md itself) run in order, then what an admin would check is checked.

The root comes from scripts/install-test-root (run by scripts/install, outside this sandbox):
debootstrap's minbase with systemd, apt's lists and the .debs its `apt install` needs in
/var/cache/apt/archives, and a pip wheelhouse. Each run boots a fresh overlay on it with
`systemd-nspawn --private-network` (loopback only, no network at all) and enters it with
`nsenter`. The checkout is copied to /usr/src/zivmilter, where the README says it is.

How the README's commands are mapped, all of it (the commands themselves run unchanged, with
bash -e, in the checkout):
- the environment: `DEBIAN_FRONTEND=noninteractive`, `PIP_NO_INDEX=1`,
  `PIP_FIND_LINKS=<the wheelhouse>` (pip installs from the wheelhouse, pymilter from its sdist);
- /etc/apt/apt.conf.d/90zivmilter-test says `APT::Get::Assume-Yes "true"` (the admin's "y");
- debconf answers Postfix's two questions as an admin would: Internet Site, mail name
  gateway.hospital.example.
After them, the test's own site settings, which a real site sets for itself: `relayhost =
[127.0.0.1]:2525` (nothing listens there: mail for other domains stays queued, where the test
reads it, instead of looking for DNS that is not there).

Last, the content rules over attachments' text (README "Which mail is secured"), as a site turns
them on: their reader runs in a forkserver child of the milter, which must work under the unit's
hardening (its unix socket in the service's private /tmp, fork, the system call filter); and
when it cannot start, the message waits (4xx), never passes unread.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from tests.harness.nspawn import CACHE, POSTFIX_DEBCONF, BootedRoot, booted, check_cache
from tests.harness.readme import CHECKOUT, install_blocks
from tests.test_attachment_text import BSN, DOCX, docx, pdf

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROOT = CACHE / "install-root"
WHEELHOUSE = "/var/cache/zivmilter-wheelhouse"  # inside the root (scripts/install-test-root)
# Added to the harness's environment (PATH, HOME, LANG, DEBIAN_FRONTEND) inside.
ENV = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELHOUSE}
SITE = "postconf -e 'relayhost = [127.0.0.1]:2525'\npostfix reload\n"
SERVICES = (
    "zivmilter.service",
    "zivmilter-portal.service",
    "zivmilter-maintenance.service",
    "zivmilter-odd-refresh.service",
)
TIMERS = ("zivmilter-maintenance.timer", "zivmilter-odd-refresh.timer")
SENDER, RECIPIENT = "alice@hospital.example", "carol@elsewhere.example"
CANARY = "BODY-CANARY-5d1e the biopsy results"
LINK = re.compile(r"https://secure\.hospital\.example/m/([A-Za-z0-9_-]+)")


def copy_checkout(target: Path) -> None:
    """The files git knows of (tracked, and new ones not ignored), as they are on disk."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def box() -> Iterator[BootedRoot]:
    check_cache("install-test-root")
    with booted(ROOT, "zivmilter-install", env=ENV, cwd=CHECKOUT, prepare=prepare) as box:
        yield box


def prepare(root: Path) -> None:
    """The checkout where the README says it is; apt answers the admin's "y" itself."""
    copy_checkout(root / CHECKOUT.lstrip("/"))
    (root / "etc/apt/apt.conf.d/90zivmilter-test").write_text('APT::Get::Assume-Yes "true";\n')


@pytest.fixture(scope="module")
def installed(box: BootedRoot) -> BootedRoot:
    """The README's blocks, in order, then the test's site settings."""
    box.run("debconf-set-selections", stdin=POSTFIX_DEBCONF)
    for block in install_blocks():
        box.run(block, timeout=600)
    box.run(SITE)
    return box


def show(box: BootedRoot, unit: str, *props: str) -> dict[str, str]:
    out = box.run(f"systemctl show {unit} -p {','.join(props)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def smtp(box: BootedRoot, data: str) -> dict[str, object]:
    """One SMTP session from inside: the reply to each step, as JSON."""
    script = textwrap.dedent(
        """
        import json, smtplib, sys
        sender, recipient = sys.argv[1:]
        data = sys.stdin.read()
        out = {}
        with smtplib.SMTP("127.0.0.1", 25, timeout=120) as s:
            s.ehlo("client.hospital.example")
            out["mail"] = s.mail(sender)[0]
            if out["mail"] == 250:
                out["rcpt"] = s.rcpt(recipient)[0]
                code, reply = s.data(data.encode())
                out["data"] = [code, reply.decode()]
        print(json.dumps(out))
        """
    )
    proc = box.run(f"python3 -c {shlex_quote(script)} {SENDER} {RECIPIENT}", stdin=data)
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def shlex_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def message(subject: str) -> str:
    return (
        f"From: Alice <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: {subject}\r\n"
        "Date: Tue, 24 Nov 2026 09:00:00 +0100\r\nMessage-ID: <readme-1@hospital.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{CANARY}\r\n"
    )


def queued(box: BootedRoot) -> list[tuple[dict[str, object], bytes]]:
    """Every message in Postfix's queue: its postqueue entry and its content."""
    entries = [json.loads(line) for line in box.run("postqueue -j").stdout.splitlines()]
    out = []
    for entry in entries:
        raw = box.run(f"postcat -bh -q {entry['queue_id']}", check=False).stdout
        lines = [ln for ln in raw.splitlines() if not ln.startswith("*** ")]
        out.append((entry, "\n".join(lines).encode()))
    return out


def test_services_active_ready_as_zivmilter(installed: BootedRoot) -> None:
    for unit in ("zivmilter.service", "zivmilter-portal.service"):
        props = show(installed, unit, "Type", "ActiveState", "SubState", "MainPID", "User")
        # Type=notify is only active once the service said READY=1.
        assert props["Type"] == "notify", props
        assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
        user = installed.run(f"ps -o user= -p {props['MainPID']}").stdout.strip()
        assert user == "zivmilter", (unit, user)
    # The store is the service user's alone, with nothing root made in it (install step 3).
    state = installed.run("stat -c '%U:%G %a' /var/lib/zivmilter").stdout.strip()
    assert state == "zivmilter:zivmilter 700"
    assert installed.run("find /var/lib/zivmilter ! -user zivmilter").stdout == ""


def test_timers_listed_and_their_services_run(installed: BootedRoot) -> None:
    listed = installed.run("systemctl list-timers --all --no-legend --no-pager").stdout
    for timer in TIMERS:
        assert timer in listed, listed
        assert show(installed, timer, "ActiveState")["ActiveState"] == "active"
    for unit in ("zivmilter-maintenance.service", "zivmilter-odd-refresh.service"):
        installed.run(f"systemctl start {unit}")  # what the timer does when it fires
        assert show(installed, unit, "Result")["Result"] == "success"


def test_message_accepted_and_notification_queued(installed: BootedRoot) -> None:
    replies = smtp(installed, message("Lab results"))
    assert replies["mail"] == 250 and replies["rcpt"] == 250, replies
    assert replies["data"][0] == 250, replies  # type: ignore[index]
    deadline = time.monotonic() + 60
    while True:
        found = [(e, raw) for e, raw in queued(installed) if LINK.search(text_of(raw))]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(found) == 1, [e for e, _ in queued(installed)]
    entry = found[0][0]
    assert [r["address"] for r in entry["recipients"]] == [RECIPIENT]  # type: ignore[attr-defined]
    for _, content in queued(installed):
        assert CANARY not in text_of(content)  # the body is in the store only, encrypted
    log = installed.run("journalctl -u zivmilter --no-pager -o cat").stdout
    assert f"to=<{RECIPIENT}> delivery=notification" in log, log[-3000:]


def text_of(raw: bytes) -> str:
    """The decoded text of every part (the link may be quoted-printable or base64 encoded)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    texts = [raw.decode(errors="replace")]
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            try:
                texts.append(part.get_content())
            except (LookupError, ValueError):
                continue
    return "\n".join(texts)


def test_portal_answers(installed: BootedRoot) -> None:
    links = [LINK.search(text_of(raw)) for _, raw in queued(installed)]
    token = next(m.group(1) for m in links if m)
    script = textwrap.dedent(
        """
        import json, sys, urllib.error, urllib.request
        class Stay(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a, **k):
                return None
        opener = urllib.request.build_opener(Stay)
        out = {}
        for name in sys.argv[1:]:
            try:
                r = opener.open("http://127.0.0.1:8025" + name, timeout=30)
            except urllib.error.HTTPError as e:
                r = e
            out[name] = [r.status, "set-cookie" in {k.lower() for k in r.headers}]
        print(json.dumps(out))
        """
    )
    paths = ["/healthz", f"/m/{token}", "/m/not-a-token"]
    proc = installed.run(f"python3 -c {shlex_quote(script)} {' '.join(paths)}")
    status = json.loads(proc.stdout)
    assert status["/healthz"][0] == 200, status
    # The link is known: its first page sets the cookie that takes the token's place.
    assert status[f"/m/{token}"] == [200, True], status
    assert status["/m/not-a-token"][0] == 404, status


def test_kill_9_restarts_with_4xx_meanwhile(installed: BootedRoot) -> None:
    before = show(installed, "zivmilter.service", "MainPID", "NRestarts")
    installed.run(f"kill -9 {before['MainPID']}")
    replies = smtp(installed, message("While it restarts"))
    code = next(v for v in replies.values() if v != 250)
    code = code[0] if isinstance(code, list) else code
    assert 400 <= int(code) < 500, replies  # type: ignore[call-overload]
    deadline = time.monotonic() + 30
    while True:
        now = show(installed, "zivmilter.service", "MainPID", "NRestarts", "ActiveState")
        if now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"]):
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.3)
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1
    replies = smtp(installed, message("After the restart"))
    assert replies["data"][0] == 250, replies  # type: ignore[index]


def test_security_exposure_at_most_2(installed: BootedRoot) -> None:
    scores = {}
    for unit in SERVICES:
        out = installed.run(f"systemd-analyze security --no-pager {unit}").stdout
        found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out)
        assert found, out[-2000:]
        scores[unit] = float(found.group(1))
    print(f"systemd-analyze security: {scores}")
    assert all(score <= 2.0 for score in scores.values()), scores


def test_units_verify_clean_and_documented(installed: BootedRoot) -> None:
    names = " ".join(f"/etc/systemd/system/{u}" for u in (*SERVICES, *TIMERS))
    proc = installed.run(f"systemd-analyze verify {names}", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc
    for unit in (*SERVICES, *TIMERS):
        for doc in show(installed, unit, "Documentation")["Documentation"].split():
            if doc.startswith("file:"):
                installed.run(f"test -f {doc.removeprefix('file:')}")


def test_a_timer_on_a_fresh_install_makes_the_store(installed: BootedRoot) -> None:
    """The maintenance timer may fire before the milter ever ran: it makes the store itself."""
    installed.run(
        "systemctl stop zivmilter zivmilter-portal\n"
        "mv /var/lib/zivmilter /var/lib/zivmilter.before\n"
        "systemctl start zivmilter-maintenance.service"
    )
    try:
        assert show(installed, "zivmilter-maintenance.service", "Result")["Result"] == "success"
        state = installed.run("stat -c '%U:%G %a' /var/lib/zivmilter").stdout.strip()
        assert state == "zivmilter:zivmilter 700"
    finally:
        installed.run(
            "rm -rf /var/lib/zivmilter\nmv /var/lib/zivmilter.before /var/lib/zivmilter\n"
            "systemctl start zivmilter zivmilter-portal"
        )


CONFIG = "/etc/zivmilter/zivmilter.yaml"
# The README's content rules with the attachments' text in scope, in `mode: rules`: a message is
# secured only when a rule matches, so one that passes plain shows the reader failed.
CONTENT_RULES = textwrap.dedent(
    """
    import sys, yaml
    with open(sys.argv[1]) as f:
        cfg = yaml.safe_load(f)
    cfg["selection"]["mode"] = "rules"
    cfg["selection"]["content"] = {
        "bsn": True, "scope": ["subject", "text", "attachment_names", "attachment_text"],
    }
    with open(sys.argv[1], "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    """
)
QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")
# Neither the milter nor its reader processes may have said any of these (the journal of the
# unit holds all three: the milter, the forkserver and its children write to its stderr).
TROUBLE = ("Traceback", "ERROR", "forkserver", "not read for the content rules", "ReaderError")


@pytest.fixture(scope="module")
def content_rules(installed: BootedRoot) -> Iterator[BootedRoot]:
    """The configuration with the content rules on (restored after); the milter restarted."""
    installed.run(
        f"cp -a {CONFIG} /root/zivmilter.yaml.before\n"
        f"/opt/zivmilter/bin/python3 -c {shlex_quote(CONTENT_RULES)} {CONFIG}\n"
        f"zivmilter check-config {CONFIG}\n"
        "systemctl restart zivmilter"
    )
    yield installed
    installed.run(f"cp -a /root/zivmilter.yaml.before {CONFIG}\nsystemctl restart zivmilter")


def cursor(box: BootedRoot) -> str:
    out = box.run("journalctl -u zivmilter -n 0 --show-cursor --no-pager").stdout
    return out.rsplit("-- cursor: ", 1)[1].strip()


def journal_after(box: BootedRoot, mark: str, *wanted: str) -> str:
    """The unit's journal after `mark`, once it has every `wanted` text (journald may lag)."""
    deadline = time.monotonic() + 30
    while True:
        log = box.run(f"journalctl -u zivmilter --after-cursor='{mark}' --no-pager -o cat").stdout
        if all(w in log for w in wanted) or time.monotonic() > deadline:
            return log
        time.sleep(0.5)


def queue_ids(box: BootedRoot) -> set[str]:
    return {json.loads(line)["queue_id"] for line in box.run("postqueue -j").stdout.splitlines()}


def letter(marker: str, name: str, ctype: str, data: bytes) -> str:
    """A short letter with no number in its text or name, and the attachment `data`."""
    msg = EmailMessage()
    msg["From"] = f"Alice <{SENDER}>"
    msg["To"] = f"<{RECIPIENT}>"
    msg["Subject"] = f"Verwijzing {marker}"
    msg["Date"] = "Tue, 24 Nov 2026 09:00:00 +0100"
    msg["Message-ID"] = f"<{marker}@hospital.example>"
    msg.set_content("Geachte collega,\n\nZie de verwijsbrief in de bijlage.\n")
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=SMTP).decode("ascii")


# (file name, content type, file, the match as the journal shows it)
ATTACHMENTS = [
    pytest.param(
        "verwijzing.pdf", "application/pdf", lambda: pdf("Verwijzing", f"BSN {BSN}"), "******782",
        id="pdf",
    ),
    pytest.param(
        "brief.docx", DOCX, lambda: docx("Geachte collega,", f"BSN {BSN}"), "******782",
        id="docx",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "ctype", "make", "masked"), ATTACHMENTS)
def test_a_bsn_only_in_an_attachment_gets_the_message_secured(
    content_rules: BootedRoot, name: str, ctype: str, make: Callable[[], bytes], masked: str
) -> None:
    box = content_rules
    mark = cursor(box)
    marker = f"attach-{name.replace('.', '-')}"
    replies = smtp(box, letter(marker, name, ctype, make()))
    assert replies["data"][0] == 250, replies  # type: ignore[index]
    (queue_id,) = QUEUED_AS.findall(replies["data"][1])  # type: ignore[index]
    # The notification took the letter's place in the queue: a link, not the attachment.
    raw = box.run(f"postcat -bh -q {queue_id}").stdout.encode()
    text = text_of(raw)
    assert LINK.search(text), text[-3000:]
    for absent in (name, ctype, BSN, "verwijsbrief"):
        assert absent not in text, absent
    # It was read by the reader's server beside the milter, as the service user, in the unit.
    readers = " ".join(box.run("ps -u zivmilter -o ppid=,args=").stdout.split())
    main = show(box, "zivmilter.service", "MainPID")["MainPID"]
    assert f"{main} /opt/zivmilter/bin/python3 -c from multiprocessing.forkserver" in readers
    matched = f"content rule bsn matched in attachment {name}: {masked}"
    log = journal_after(box, mark, matched, f"[{queue_id} <{marker}@hospital.example>] done:")
    assert matched in log, log
    assert f"to=<{RECIPIENT}> delivery=notification" in log, log
    assert not [line for line in log.splitlines() if any(t in line for t in TROUBLE)], log


def test_a_reader_that_cannot_start_holds_the_message(content_rules: BootedRoot) -> None:
    """Without PrivateTmp=, /tmp is read-only under ProtectSystem=strict and the reader's
    forkserver has nowhere for its socket: the message is answered 4xx (the client retries),
    and the journal says why from the start."""
    box = content_rules
    dropin = "/run/systemd/system/zivmilter.service.d"
    mark = cursor(box)
    box.run(
        f"mkdir -p {dropin}\nprintf '[Service]\\nPrivateTmp=no\\n' >{dropin}/tmp.conf\n"
        "systemctl daemon-reload\nsystemctl restart zivmilter"
    )
    try:
        data = letter("attach-nostart", "verwijzing.pdf", "application/pdf", pdf(f"BSN {BSN}"))
        before = queue_ids(box)
        replies = smtp(box, data)
        code, text = replies["data"]  # type: ignore[misc]
        assert (code, text.split()[0]) == (451, "4.3.0"), replies
        said = "the attachments' text reader could not be started"
        held = "messages with attachments to read are tempfailed until it starts"
        log = journal_after(box, mark, said, held, "tempfail, ref")
        assert said in log and held in log, log
        assert queue_ids(box) == before  # nothing queued: the client keeps it
    finally:
        box.run(f"rm -r {dropin}\nsystemctl daemon-reload\nsystemctl restart zivmilter")
