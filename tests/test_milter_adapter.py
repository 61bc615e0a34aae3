"""The pymilter adapter in-process, with pymilter's own TestCtx (fast; Postfix runs elsewhere).

What the MTA is told to do is checked on TestCtx's record of it: header edits, body, recipients,
and the reply on a fault.
"""

from __future__ import annotations

import base64
import email
import os
import socket
import tempfile
from collections.abc import Sequence
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP
from pathlib import Path
from typing import Any

import Milter
import pytest
from Milter import testctx

from tests.fakes import Collecting, make_config
from tests.harness.messages import nested_message
from zivmilter import defaults
from zivmilter.core.config import Config
from zivmilter.core.facts import Facts, facts_from_mapping
from zivmilter.delivery.reinject import Outgoing
from zivmilter.gateway import Gateway, Plan, Transaction
from zivmilter.mta.milter import ZivMilter
from zivmilter.store import SqliteStore

MESSAGE = (
    b"From: alice@hospital.example\r\nTo: bob@partner.example, carol@oldmail.example\r\n"
    b"Subject: results\r\nzivver-access-right: carol@oldmail.example sms +31612345678\r\n"
    b"\r\nSECRET BODY\r\n"
)


def use_gateway(store: SqliteStore, cfg: Config, facts: Facts, **kwargs: Any) -> Collecting:
    """The gateway the milter serves (as `serve` sets it); returns what it re-injects."""
    sent = Collecting()
    ZivMilter.gateway = Gateway(cfg, facts, store, sent, hostname="gw.test", **kwargs)
    return sent


def use_own_domains_gateway(store: SqliteStore) -> Collecting:
    """`use_gateway` where any address of the organization's domains may submit, with no
    facts pinned: what most tests of the adapter's own behaviour need."""
    return use_gateway(
        store,
        make_config({"submission": {"any_address_of_own_domains": True}}),
        facts_from_mapping({}),
    )


def run(
    ctx: testctx.TestCtx,
    rcpts: list[str],
    message: bytes = MESSAGE,
    *,
    client: str = "127.0.0.1",
    helo: str | None = None,
) -> int:
    """Drive the callbacks as libmilter would for one message (macros set on `ctx` before
    are seen at connect).

    TestCtx's own _feedFile stops at the first answer other than CONTINUE, and the collecting
    callbacks answer NOREPLY (@noreply, for speed): so the callbacks are driven here, and
    TestCtx records the actions (header edits, body, recipients, reply).
    """
    ctx._setsymval("i", "QID123")
    Milter.factory = ZivMilter  # as serve() sets it: one instance per connection
    ctx._negotiate()
    Milter.connect_callback(ctx, "localhost", socket.AF_INET, (client, 2525))
    milter = ctx.getpriv()
    if helo is not None:
        milter.hello(helo)
    # what TestCtx edits: the header fields (the body is not parsed, as the MTA holds it)
    ctx._msg = BytesHeaderParser().parsebytes(message)
    assert milter.envfrom("<alice@hospital.example>") == Milter.CONTINUE
    for r in rcpts:
        milter.envrcpt(f"<{r}>")
    assert milter.data() == Milter.CONTINUE
    head, _, body = message.partition(b"\r\n\r\n")
    for name, value in email.message_from_bytes(head + b"\r\n\r\n").items():
        milter.header(name, " " + value)  # leading space kept (P_HDR_LEADSPC)
    milter.eoh()
    milter.body(body)
    return int(ctx._eom())  # TestCtx records actions only from inside its own eom step


def added(ctx: testctx.TestCtx, name: str) -> list[str]:
    """The fields `name` the milter added or changed, as the MTA writes them. With
    P_HDR_LEADSPC negotiated (ZivMilter asks for it) the MTA writes `name:value` with the value
    exactly as given, the space after the colon included (libmilter's smfi_addheader; Postfix
    milter8.c); without it, `name: value`."""
    leading_space = ctx.getpriv()._protocol & Milter.P_HDR_LEADSPC
    return [f"{name}{':' if leading_space else ': '}{v}" for v in ctx._msg.get_all(name, [])]


def test_plan_is_applied(store: SqliteStore) -> None:
    sent = use_gateway(
        store,
        make_config(
            {
                "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
                "submission": {"any_address_of_own_domains": True},
            },
            base={"organization": {"domains": ["hospital.example"]}},
        ),
        facts_from_mapping({"transport": {"partner.example": "pkix"}}),
    )
    ctx = testctx.TestCtx()
    rc = run(ctx, ["bob@partner.example", "carol@oldmail.example"])
    assert rc == Milter.ACCEPT
    # bob (direct, pkix) stays in this transaction; carol's notification is re-injected
    assert ctx._delrcpt == ["<carol@oldmail.example>"]
    assert ctx._headerschanged
    assert added(ctx, "X-Zivmilter-Route") == ["X-Zivmilter-Route: direct-pkix"]
    assert ctx._msg["zivver-access-right"] is None
    assert not ctx._bodyreplaced
    (note,) = sent.sent
    assert note.recipients == ("carol@oldmail.example",)
    assert isinstance(note.content, bytes) and b"SECRET BODY" not in note.content


def test_a_kept_recipient_given_twice_is_never_removed(store: SqliteStore) -> None:
    # smfi_delrcpt removes every recipient of that address (Postfix's cleanup_del_rcpt): a
    # delrcpt of the kept recipient's second, identical RCPT TO would leave the kept copy with
    # no recipient at all, the message accepted and lost. Another case of it may go.
    use_own_domains_gateway(store)
    ctx = testctx.TestCtx()
    rcpts = ["carol@oldmail.example", "carol@oldmail.example", "Carol@oldmail.example"]
    assert run(ctx, rcpts) == Milter.ACCEPT
    assert ctx._bodyreplaced  # carol's notification stays in this transaction
    assert ctx._delrcpt == ["<Carol@oldmail.example>"]


def test_log_never_shows_a_misplaced_secret(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    use_own_domains_gateway(store)
    leaky = MESSAGE.replace(
        b"carol@oldmail.example sms +31612345678",
        b"carol@oldmail.example +31612345678\r\nzivver-access-right: sms +31687654321 carol",
    )
    caplog.set_level("INFO", logger="zivmilter")
    assert run(testctx.TestCtx(), ["carol@oldmail.example"], leaky) in (
        Milter.ACCEPT,
        Milter.DISCARD,
    )
    assert "zivver-access-right: 'carol@oldmail.example ***'" in caplog.text
    assert "zivver-access-right: '***'" in caplog.text
    assert "31612345678" not in caplog.text and "31687654321" not in caplog.text


def test_encoded_access_code_is_stored_decoded(store: SqliteStore) -> None:
    use_own_domains_gateway(store)
    # As an application using the email package sends it: the code becomes an encoded word.
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "alice@hospital.example"
    msg["To"] = "carol@oldmail.example"
    msg["Message-ID"] = "<tulip@hospital.example>"
    msg["zivver-access-right"] = "carol@oldmail.example access-code tülip"
    msg.set_content("SECRET BODY")
    message = msg.as_bytes()
    assert b"=?utf-8?" in message
    run(testctx.TestCtx(), ["carol@oldmail.example"], message)
    (saved,) = store.find_messages("tulip@hospital.example")
    (carol,) = store.recipients(saved.id)
    assert carol.verification == "access_code" and carol.access_code_hash is not None
    assert store.access_code_matches(carol.access_code_hash, "tülip")


def test_config_idd_counts_with_pinned_facts(store: SqliteStore) -> None:
    # What `zivmilter run --facts FILE` serves: the config's idd.domains count, as in explain.
    use_gateway(
        store,
        make_config(
            {
                "submission": {"any_address_of_own_domains": True},
                "idd": {"domains": ["partner.example"]},
            }
        ),
        facts_from_mapping(
            {"accounts": ["bob@partner.example"], "transport": {"partner.example": "pkix"}}
        ),
    )
    ctx = testctx.TestCtx()
    assert run(ctx, ["bob@partner.example"]) == Milter.ACCEPT
    assert added(ctx, "X-Zivmilter-Route") == ["X-Zivmilter-Route: direct-pkix"]  # A1, IDD met


def test_ntamx_recipients_get_a_copy_of_their_own_routed_to_the_ntamx_hosts(
    store: SqliteStore,
) -> None:
    # bob's MX is pkix (A4); care.example's record names ntamx hosts that are pkix too (A2):
    # same level, different next hop, so two copies. The client's own route header is gone.
    sent = use_gateway(
        store,
        make_config(
            {
                "organization": {"nta7516": True},
                "policy": {"transport_security_compliance": "pkix"},
                "submission": {"any_address_of_own_domains": True},
            }
        ),
        facts_from_mapping(
            {
                "transport": {"partner.example": "pkix", "care.example": "none"},
                "nta7516": {
                    "care.example": {
                        "ntamx": ["mx1.nta.example", "mx2.nta.example"],
                        "transport": "pkix",
                    }
                },
            }
        ),
    )
    message = (
        b"From: alice@hospital.example\r\nTo: bob@partner.example, x@care.example\r\n"
        b"Subject: results\r\nX-Zivmilter-Route: direct-dane nexthop=[evil.example]\r\n"
        b"\r\nSECRET BODY\r\n"
    )
    ctx = testctx.TestCtx()
    assert run(ctx, ["bob@partner.example", "x@care.example"], message) == Milter.ACCEPT
    # bob's copy (the MX route sorts first) stays; the client's route header is deleted
    assert ctx._delrcpt == ["<x@care.example>"]
    assert added(ctx, "X-Zivmilter-Route") == ["X-Zivmilter-Route: direct-pkix"]
    (copy,) = sent.sent
    assert copy.recipients == ("x@care.example",)
    assert copy.what == "direct-pkix copy via mx1.nta.example, mx2.nta.example"
    if isinstance(copy.content, bytes):
        data = copy.content
    else:  # a spooled copy of the original, as the re-injector reads it
        copy.content.seek(0)
        data = copy.content.read()
    head = data.partition(b"\r\n\r\n")[0]
    assert head.startswith(
        b"X-Zivmilter-Route: direct-pkix nexthop=[mx1.nta.example],[mx2.nta.example]\r\n"
    )
    assert head.count(b"X-Zivmilter-Route") == 1 and b"evil.example" not in data
    assert b"SECRET BODY" in data


class Broken:
    def process(self, tx: Transaction) -> Plan:
        raise RuntimeError("disk on fire")


def test_fault_answers_tempfail_with_a_reference(caplog: pytest.LogCaptureFixture) -> None:
    ZivMilter.gateway = Broken()  # type: ignore[assignment]
    ctx = testctx.TestCtx()
    rc = run(ctx, ["bob@partner.example"])
    assert rc == Milter.TEMPFAIL
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("451", "4.3.0")
    ref = text.split("ref ")[1].split(";")[0]
    assert f"tempfail, ref {ref}" in caplog.text and "disk on fire" in caplog.text


def test_refused_submission_is_rejected_with_the_reason(store: SqliteStore) -> None:
    sent = use_gateway(
        store,
        make_config(base={"organization": {"domains": ["hospital.example"]}}),
        facts_from_mapping({}),
    )
    ctx = testctx.TestCtx()
    message = b"Message-ID: <refused@hospital.example>\r\n" + MESSAGE
    assert run(ctx, ["bob@partner.example"], message) == Milter.REJECT
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("550", "5.7.1")
    assert "alice@hospital.example" in text
    assert sent.sent == []  # nothing stored or sent for a refused message
    assert store.find_messages("<refused@hospital.example>") == []


def test_listener_rules_apply_per_daemon_name(store: SqliteStore) -> None:
    """`submission.listeners`: the submission port trusts no network, port 25 trusts loopback."""
    cfg = make_config(
        {
            "submission": {
                "any_address_of_own_domains": True,
                "listeners": {"submission": {"trusted_networks": [], "spf": False}},
            }
        },
        base={"organization": {"domains": ["hospital.example"]}},
    )
    results = {}
    for listener in ("smtpd", "submission"):
        use_gateway(store, cfg, facts_from_mapping({}))
        ctx = testctx.TestCtx()
        ctx._setsymval("{daemon_name}", listener)
        results[listener] = (run(ctx, ["bob@partner.example"]), ctx._reply)
    assert results["smtpd"][0] == Milter.ACCEPT
    rc, (code, xcode, text) = results["submission"]
    assert (rc, code, xcode) == (Milter.REJECT, "550", "5.7.1")
    assert "127.0.0.1" in text


class _SeesHelo:
    """An SPF checker that records the HELO name it is given and answers pass."""

    def __init__(self) -> None:
        self.helo: list[str | None] = []

    def check(self, ip: str, sender: str, helo: str | None) -> Any:
        from zivmilter.core.submission import SpfResult, SpfVerdict

        self.helo.append(helo)
        return SpfResult(SpfVerdict.PASS, "")


@pytest.mark.parametrize(
    ("version", "expected"), [("Postfix 3.7.11", Milter.ACCEPT), ("8.17.1", Milter.TEMPFAIL)]
)
def test_a_sendmail_behind_milter_mta_postfix_is_held(
    store: SqliteStore, version: str, expected: int
) -> None:
    # Sendmail cannot route a direct copy on its route header: with milter.mta: postfix that
    # copy would leave under Sendmail's own TLS, so the mail waits (4xx) instead.
    spf = _SeesHelo()
    sent = use_gateway(
        store,
        make_config(
            {
                "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
                "submission": {"any_address_of_own_domains": True, "trusted_networks": []},
            },
            base={"organization": {"domains": ["hospital.example"]}},
        ),
        facts_from_mapping({"transport": {"partner.example": "pkix"}}),
        spf=spf,
    )
    ctx = testctx.TestCtx()
    ctx._setsymval("v", version)
    rc = run(ctx, ["bob@partner.example"], client="192.0.2.7", helo="app.hospital.example")
    assert rc == expected
    if expected == Milter.TEMPFAIL:
        code, xcode, text = ctx._reply
        assert (code, xcode) == ("451", "4.3.5") and "milter.mta" in text
        assert sent.sent == [] and spf.helo == []
    else:
        assert added(ctx, "X-Zivmilter-Route") == ["X-Zivmilter-Route: direct-pkix"]
        assert spf.helo == ["app.hospital.example"]  # SPF got the client's HELO name


def _spool_files(folder: Path) -> dict[str, bytes]:
    """Every file in `folder`: those with a name, and the unnamed ones this process holds open
    (a temporary file has no name on Linux, O_TMPFILE: only /proc/self/fd shows it)."""
    found = {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder)):
                with open(f"/proc/self/fd/{fd}", "rb") as f:
                    found[target] = f.read()
        except OSError:
            continue  # the descriptor of the listing itself, gone by now
    return found


def test_a_large_message_is_never_on_disk_in_plaintext(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Above milter.spool_threshold (1 MiB) the message and the gateway's copies of it go to
    # temporary files: after a crash (kill -9) those stay on the disk. They must be unreadable.
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    seen: list[dict[str, bytes]] = []

    class Watching(Collecting):
        def send(self, messages: Sequence[Outgoing]) -> list[str]:
            seen.append(_spool_files(folder))  # in flight: spooled, stored, copies being sent
            return super().send(messages)

    sent = Watching()
    ZivMilter.gateway = Gateway(
        make_config(
            {
                "policy": {"transport_security_compliance": "tls"},
                "submission": {"any_address_of_own_domains": True},
            }
        ),
        facts_from_mapping({"transport": {"partner.example": "pkix", "tlsonly.example": "tls"}}),
        store,
        sent,
        hostname="gw.test",
    )
    canary = b"CANARY-patient-4711 "
    big = MESSAGE.replace(b"SECRET BODY\r\n", (canary * 3 + b"\r\n") * 40_000)
    assert len(big) > 2 * 1024 * 1024
    rcpts = ["bob@partner.example", "t@tlsonly.example", "carol@oldmail.example"]
    assert run(testctx.TestCtx(), rcpts, big) == Milter.ACCEPT
    # one direct copy stays in the transaction, the other is re-injected from a spool
    copy = next(m for m in sent.sent if m.what.startswith("direct"))
    assert not isinstance(copy.content, bytes)
    copy.content.seek(0)
    assert canary in copy.content.read()  # as the re-injector reads it: the plaintext
    copy.content.close()
    (in_flight,) = seen
    spooled = [data for data in in_flight.values() if len(data) > 2 * 1024 * 1024]
    assert len(spooled) >= 2, "the message and its copy were not on disk: nothing was checked"
    for name, data in in_flight.items():
        assert canary not in data, f"{name} holds the message in plaintext"
    assert _spool_files(folder) == {}  # and nothing is left behind


class _Recording(testctx.TestCtx):  # type: ignore[misc]
    """TestCtx, keeping each header the milter adds in order."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[tuple[str, str]] = []

    def addheader(self, field: str, value: str, idx: int) -> None:
        self.added.append((field, value))
        super().addheader(field, value, idx)


def test_a_kept_notification_has_a_space_after_each_colon(store: SqliteStore) -> None:
    # One notification recipient: the notification replaces the message in this transaction,
    # its header fields added through libmilter. Written as the MTA writes them, each must read
    # `Name: value` as every mailer writes it (and as the re-injected notifications have it).
    use_own_domains_gateway(store)
    ctx = _Recording()
    assert run(ctx, ["carol@oldmail.example"]) == Milter.ACCEPT
    assert ctx._bodyreplaced
    names = [name for name, _ in ctx.added]
    assert "Content-Type" in names and "X-Zivmilter-Notification" in names
    leading_space = ctx.getpriv()._protocol & Milter.P_HDR_LEADSPC
    for name, value in ctx.added:
        written = f"{name}{':' if leading_space else ': '}{value}"
        assert written.startswith(f"{name}: ") and not written.startswith(f"{name}:  ")
    content_type = next(v for n, v in ctx.added if n == "Content-Type")
    assert f"Content-Type:{content_type}".startswith("Content-Type: multipart/alternative;")


def test_a_short_access_code_is_used_and_logged_as_weak(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    use_own_domains_gateway(store)
    message = (
        b"From: alice@hospital.example\r\nTo: carol@oldmail.example\r\n"
        b"Message-ID: <short@hospital.example>\r\n"
        b"zivver-access-right: carol@oldmail.example access-code 4711\r\n"
        b"Subject: results\r\n\r\nSECRET BODY\r\n"
    )
    with caplog.at_level("INFO"):
        run(testctx.TestCtx(), ["carol@oldmail.example"], message)
    assert "access code shorter than 6 characters" in caplog.text
    assert "4711" not in caplog.text
    (saved,) = store.find_messages("short@hospital.example")
    (carol,) = store.recipients(saved.id)
    assert carol.verification == "access_code"
    assert store.access_code_matches(carol.access_code_hash, "4711")


def test_a_fault_while_spooling_answers_tempfail_at_the_end(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The temporary folder fails under a message above the spool threshold. Raised out of the
    # body callback (one the MTA wants no reply to), libmilter dropped the rest of the message
    # unanswered and the client waited for the MTA's milter timeout: the end of the message
    # must be answered with tempfail and a reference the log has.
    sent = use_own_domains_gateway(store)
    monkeypatch.setattr(ZivMilter, "spool_threshold", 4096)
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/zivmilter-tmp")
    message = b"Message-ID: <spool@hospital.example>\r\n" + MESSAGE + b"x" * 8192 + b"\r\n"
    ctx = testctx.TestCtx()
    assert run(ctx, ["carol@oldmail.example"], message) == Milter.TEMPFAIL
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("451", "4.3.0")
    ref = text.split("ref ")[1].split(";")[0]
    assert f"ref {ref}" in caplog.text and "/nonexistent/zivmilter-tmp" in caplog.text
    assert sent.sent == [] and store.find_messages("spool@hospital.example") == []
    assert ctx.getpriv().spool is None  # closed


# -- milter.max_message_bytes ------------------------------------------------------------------


def _drive(ctx: testctx.TestCtx, message: bytes, chunk: int, *params: str) -> ZivMilter:
    """Connect, MAIL FROM (with its ESMTP `params`) and RCPT as `run` does; then, if MAIL FROM
    was taken, the message in body chunks of `chunk` bytes (libmilter's are up to 64 KiB)."""
    ctx._setsymval("i", "QID123")
    Milter.factory = ZivMilter
    ctx._negotiate()
    Milter.connect_callback(ctx, "localhost", socket.AF_INET, ("127.0.0.1", 2525))
    milter: ZivMilter = ctx.getpriv()
    ctx._msg = BytesHeaderParser().parsebytes(message)
    if milter.envfrom("<alice@hospital.example>", *params) != Milter.CONTINUE:
        return milter
    milter.envrcpt("<carol@oldmail.example>")
    milter.data()
    head, _, body = message.partition(b"\r\n\r\n")
    for name, value in email.message_from_bytes(head + b"\r\n\r\n").items():
        milter.header(name, " " + value)
    milter.eoh()
    for start in range(0, len(body), chunk):
        milter.body(body[start : start + chunk])
    return milter


def test_a_message_over_max_message_bytes_is_refused_and_not_kept(
    store: SqliteStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 300 KB against a limit of 100 KB, spooled to disk above 16 KiB: once the count passes the
    # limit the spool is gone and the rest is not written anywhere; the end of data refuses it
    # for good (552 5.3.4: message too big), and nothing is stored or sent.
    sent = use_own_domains_gateway(store)
    monkeypatch.setattr(ZivMilter, "max_message_bytes", 100_000)
    monkeypatch.setattr(ZivMilter, "spool_threshold", 16 * 1024)
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    message = b"Message-ID: <big@hospital.example>\r\n" + MESSAGE + (b"y" * 98 + b"\r\n") * 3000
    ctx = testctx.TestCtx()
    ctx._setsymval("i", "QID123")
    milter = _drive(ctx, message[: len(message) // 4], 8192)
    assert milter.spool is not None and any(_spool_files(folder).values())  # on disk so far
    for start in range(len(message) // 4, len(message), 8192):
        milter.body(message[start : start + 8192])
        if start > 110_000:
            assert milter.spool is None and _spool_files(folder) == {}, "kept past the limit"
    caplog.set_level("INFO", logger="zivmilter")
    assert ctx._eom() == Milter.REJECT
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("552", "5.3.4")
    assert text == "message too big for zivmilter (over 100000 bytes, milter.max_message_bytes)"
    (line,) = [r for r in caplog.records if "too big" in r.getMessage()]
    assert line.queue_id == "QID123" and line.message_id == "<big@hospital.example>"  # type: ignore[attr-defined]
    assert sent.sent == [] and store.find_messages("big@hospital.example") == []


def test_max_message_bytes_counts_the_message_as_the_mta_passes_it(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Header fields and body as passed (CRLF line ends): a message of exactly the limit passes,
    # one byte more does not. MESSAGE's fields are unfolded, so that is its length.
    use_own_domains_gateway(store)
    for limit, expected in ((len(MESSAGE), Milter.ACCEPT), (len(MESSAGE) - 1, Milter.REJECT)):
        monkeypatch.setattr(ZivMilter, "max_message_bytes", limit)
        ctx = testctx.TestCtx()
        assert run(ctx, ["carol@oldmail.example"]) == expected, limit


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (("SIZE=100001",), Milter.REJECT),
        (("BODY=8BITMIME", "size=250000"), Milter.REJECT),
        (("SIZE=100000",), Milter.CONTINUE),
        (("SIZE=",), Milter.CONTINUE),  # no number: the MTA judges the syntax, we count
        (("BODY=8BITMIME",), Milter.CONTINUE),
    ],
)
def test_a_declared_size_over_the_limit_is_refused_at_mail_from(
    store: SqliteStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    params: tuple[str, ...],
    expected: int,
) -> None:
    # RFC 1870: the client declares the size at MAIL FROM; pymilter passes ESMTP parameters to
    # envfrom. Over the limit, the message is refused before a byte of it is sent.
    sent = use_own_domains_gateway(store)
    monkeypatch.setattr(ZivMilter, "max_message_bytes", 100_000)
    caplog.set_level("INFO", logger="zivmilter")
    ctx = testctx.TestCtx()
    _drive(ctx, MESSAGE, 65536, *params)
    if expected == Milter.REJECT:
        code, xcode, text = ctx._reply
        assert (code, xcode) == ("552", "5.3.4") and "milter.max_message_bytes" in text
        (line,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert line.endswith("at MAIL FROM") and "SIZE=" in line
    else:
        assert ctx._reply is None and "refused" not in caplog.text
        assert ctx._eom() == Milter.ACCEPT
        assert len(sent.sent) + int(ctx._bodyreplaced) == 1  # carol's notification
    if expected == Milter.REJECT:
        assert sent.sent == []


# -- MIME nesting (defaults.MIME_NESTING_LIMIT) -------------------------------------------------

NESTED_HEAD = (
    b"From: alice@hospital.example\r\n"
    b"To: bob@partner.example, carol@oldmail.example, dave@pdf.example\r\n"
    b"Subject: forwarded results\r\nMessage-ID: <nested@hospital.example>\r\n"
    b"zivver-access-right: dave@pdf.example access-code tulip-42-meadow\r\n"
)
NESTED_RCPTS = ["bob@partner.example", "carol@oldmail.example", "dave@pdf.example"]
SCAN = base64.encodebytes(bytes(range(256)) * 6000).replace(b"\n", b"\r\n")  # 2 MB encoded
INNERMOST = (
    b"Content-Type: application/pdf; name=scan.pdf\r\n"
    b"Content-Disposition: attachment; filename=scan.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + SCAN
)


def _every_walk(store: SqliteStore) -> Collecting:
    """A gateway that walks a message's MIME tree every way it does: content rules on its text
    and attachment names; bob a direct copy whose large attachment becomes a link; carol a
    notification, the message (over 1 MiB) stored with its large part apart; dave an encrypted
    PDF of it all."""
    return use_gateway(
        store,
        make_config(
            {
                "policy": {
                    "outbound_direct_delivery": {"domains": ["partner.example"]},
                    "large_attachment_bytes": 100_000,
                },
                "submission": {"any_address_of_own_domains": True},
                "selection": {
                    "content": {"bsn": True, "scope": ["subject", "text", "attachment_names"]}
                },
                "encryption": {"pdf": True},
            },
            base={"organization": {"domains": ["hospital.example"]}},
        ),
        facts_from_mapping({"transport": {"partner.example": "pkix", "pdf.example": "tls"}}),
    )


def test_a_message_nested_to_the_limit_goes_through_every_walk(store: SqliteStore) -> None:
    sent = _every_walk(store)
    message = nested_message(defaults.MIME_NESTING_LIMIT, NESTED_HEAD, INNERMOST)
    ctx = testctx.TestCtx()
    assert run(ctx, NESTED_RCPTS, message) == Milter.ACCEPT, ctx._reply
    # bob's direct copy stays in the transaction, its attachment a link
    assert added(ctx, "X-Zivmilter-Route") == ["X-Zivmilter-Route: direct-pkix"]
    assert ctx._bodyreplaced
    kept = ctx._body.getvalue()
    assert b"https://secure.example.org/d/" in kept and SCAN[:1000] not in kept
    assert kept.count(b"--level-") == message.count(b"--level-")  # every level still there
    whats = sorted(m.what for m in sent.sent)
    assert whats == [
        "notification to carol@oldmail.example",
        "pdf-encrypted copy to dave@pdf.example",
    ]
    (saved,) = store.find_messages("nested@hospital.example")
    assert store.recipients(saved.id)


@pytest.mark.parametrize("depth", [defaults.MIME_NESTING_LIMIT + 1, 400, 2000])
def test_a_message_nested_deeper_is_refused_for_good(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    # 400 levels broke the direct copy's attachment links, 2000 the stored parts: a
    # RecursionError, tempfail at every try, the message in the client's queue for days. Now
    # a permanent refusal before anything is stored or sent, naming the limit.
    sent = _every_walk(store)
    message = nested_message(depth, NESTED_HEAD, INNERMOST)
    caplog.set_level("INFO", logger="zivmilter")
    ctx = testctx.TestCtx()
    assert run(ctx, NESTED_RCPTS, message) == Milter.REJECT
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("554", "5.6.0")
    assert text == (
        "MIME nesting deeper than 100 levels, refused by zivmilter (its limit, as Postfix's"
        " mime_nesting_limit)"
    )
    (line,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert line.queue_id == "QID123" and "5.6.0" in line.getMessage()  # type: ignore[attr-defined]
    assert sent.sent == [] and store.find_messages("nested@hospital.example") == []
    assert "Traceback" not in caplog.text
