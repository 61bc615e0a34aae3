"""Every message zivmilter makes leaves DKIM-signed and aligned (issue 23), with a real signer.

Debian's OpenDKIM runs as a second milter on the test Postfix, wired as the README's "DKIM and
DMARC" section says (zivmilter first, the signer alone on the re-injection listener), and in the
wrong order. What reaches the receiving servers is verified with dkimpy against the key the
signer publishes: kept and re-injected notifications, the direct copy of a split message,
sendmail(1) mail, the DSN, the portal's code mail and secure reply.
"""

from __future__ import annotations

import email.utils
import os
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from typing import Any

import dkim
import pytest
import trustme

from tests.harness import opendkim
from tests.harness.postfix import PostfixInstance
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink, server_tls_context
from tests.harness.zivmilter import ZivmilterProcess, attach
from zivmilter.delivery.reinject import Outgoing, SmtpReinjector
from zivmilter.portal import mail as portal_mail

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not opendkim.available(), reason="opendkim is not installed"),
]

ORG = "hospital.example"
PLAIN_IP, TLS_IP = "127.0.0.30", "127.0.0.40"
HOSTS = f"127.0.0.1 localhost\n{PLAIN_IP} oldmail.example {ORG}\n{TLS_IP} partner.example\n"
CONFIG = {"policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}}}
FACTS = {"transport": {"partner.example": "pkix"}}
BODY = "PLAINTEXT-MARKER-dkim the lab results"
UNUSABLE = "x@[127.0.0.30]"  # passes Postfix, fails at the gateway: a DSN to the sender


@pytest.fixture(scope="module")
def sinks() -> Iterator[tuple[Sink, Sink]]:
    ca = trustme.CA()
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(ca.cert_pem.bytes())
    os.chmod(f.name, 0o644)
    try:
        with (
            bind_mounted("/etc/hosts", HOSTS),
            Sink(PLAIN_IP, 25) as plain,
            Sink(TLS_IP, 25, tls=server_tls_context(ca.issue_cert("partner.example"))) as tls,
        ):
            plain.ca_file = f.name  # type: ignore[attr-defined]
            yield plain, tls
    finally:
        os.unlink(f.name)


Stack = tuple[PostfixInstance, ZivmilterProcess, opendkim.Signer]


@pytest.fixture(scope="module", params=["zivmilter-first", "signer-first"])
def stack(request: pytest.FixtureRequest, sinks: tuple[Sink, Sink]) -> Iterator[Stack]:
    pf = PostfixInstance(tls_ca_file=sinks[0].ca_file)  # type: ignore[attr-defined]
    z = attach(pf, facts=FACTS, config=CONFIG)
    with opendkim.Signer(ORG) as signer:
        opendkim.wire(pf, z.postfix_socket, signer, signer_first=request.param == "signer-first")
        with z, pf:
            yield pf, z, signer


def dnsfunc(signer: opendkim.Signer) -> Any:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        want = f"{signer.selector}._domainkey.{signer.domain}."
        return signer.published().encode() if name.decode().lower() == want else b""

    return lookup


def verdict(data: bytes, signer: opendkim.Signer) -> str:
    """ "aligned", or what is wrong: unsigned, not verified, or d= not the From's domain."""
    msg = email.message_from_bytes(data, policy=policy.compat32)
    signatures = msg.get_all("DKIM-Signature", [])
    if not signatures:
        return "unsigned"
    if not dkim.verify(data, dnsfunc=dnsfunc(signer)):
        return "signature does not verify"
    tags = dict(
        (k.strip(), v.strip())
        for k, _, v in (t.partition("=") for t in "".join(signatures[0].split()).split(";"))
    )
    ((_, author),) = email.utils.getaddresses(msg.get_all("From", []))
    from_domain = author.rpartition("@")[2].lower()
    return "aligned" if tags.get("d", "").lower() == from_domain else f"d={tags.get('d')}"


def sendmail(pf: PostfixInstance, sender: str, rcpt: str, data: bytes) -> None:
    """Postfix's sendmail(1) with the test instance's config: the non_smtpd_milters path."""
    subprocess.run(
        ["/usr/sbin/sendmail", "-C", str(pf.config_dir), "-f", sender, "-i", rcpt],
        input=data,
        check=True,
        capture_output=True,
        timeout=60,
    )


def message(to: str, msgid: str) -> bytes:
    return (
        f"From: Dr. Alice <alice@{ORG}>\r\nTo: {to}\r\nSubject: Lab results\r\n"
        f"Message-ID: <{msgid}@{ORG}>\r\nDate: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{BODY}\r\n"
    ).encode()


def portal_mails(to: str) -> list[EmailMessage]:
    """The portal's code mail and secure reply, built by its own builders."""
    code = portal_mail.code_email(
        to=to, code="123456", sender_text=f"alice@{ORG}", language="en",
        org_name="Hospital", org_domain=ORG,
    )  # fmt: skip
    reply = portal_mail.reply_email(
        author=to, to=f"alice@{ORG}", subject="Lab results", in_reply_to=f"<r1@{ORG}>",
        references="", sent="today", text="thanks", files=[], language="en",
        org_name="Hospital", org_domain=ORG,
    )  # fmt: skip
    return [code, reply]


def kinds(stack: Stack, sinks: tuple[Sink, Sink], tag: str) -> dict[str, bytes]:
    """Make one message of every kind zivmilter writes; what the receiving servers got."""
    pf = stack[0]
    plain, tls = sinks
    p0, t0 = len(plain.received), len(tls.received)
    # A split message: a direct copy (pkix), two notifications (one kept, one re-injected), and
    # a DSN about a recipient the gateway cannot serve.
    rcpts = ["bob@partner.example", "carol@oldmail.example", "dave@oldmail.example", UNUSABLE]
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.sendmail(f"alice@{ORG}", rcpts, message(", ".join(rcpts[:3]), f"split-{tag}"))
    # One notification alone: the transaction itself is rewritten (the kept notification).
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.sendmail(f"alice@{ORG}", ["erin@oldmail.example"], message("erin@oldmail.example", tag))
    sendmail(pf, f"alice@{ORG}", "fred@oldmail.example", message("fred@oldmail.example", tag))
    # The portal hands its code mail to the re-injection listener and a secure reply to the
    # replies listener (the site's content filters), as the portal process does.
    code, reply = portal_mails("gina@oldmail.example")
    SmtpReinjector("127.0.0.1", pf.reinject_port, 30).send(
        [
            Outgoing(portal_mail.portal_sender(ORG), ["gina@oldmail.example"],
                     code.as_bytes(policy=policy.SMTP), "code mail"),
        ]
    )  # fmt: skip
    SmtpReinjector("127.0.0.1", pf.replies_port, 30).send(
        [
            Outgoing(portal_mail.portal_sender(ORG), [f"alice@{ORG}"],
                     reply.as_bytes(policy=policy.SMTP), "portal reply"),
        ]
    )  # fmt: skip
    got = plain.wait_for(p0 + 7, timeout=60)[p0:]
    (direct,) = tls.wait_for(t0 + 1, timeout=60)[t0:]
    by: dict[str, bytes] = {"direct copy": direct.data}
    for r in got:
        m = email.message_from_bytes(r.data, policy=policy.compat32)
        rcpt = r.rcpt_tos[0]
        if m.get_content_type() == "multipart/report":
            by["DSN"] = r.data
        elif m.get("X-Zivmilter-Portal-Reply"):
            by["portal reply"] = r.data
        elif rcpt == "gina@oldmail.example":
            by["code mail"] = r.data
        elif rcpt == "erin@oldmail.example":
            by["kept notification"] = r.data
        elif rcpt == "fred@oldmail.example":
            by["sendmail(1) notification"] = r.data
        else:
            by[f"split notification to {rcpt}"] = r.data
    return by


WARNING = "DKIM-Signature of hospital.example before zivmilter rewrote it"


def test_every_kind_of_message_is_signed_and_aligned(
    stack: Stack, sinks: tuple[Sink, Sink], request: pytest.FixtureRequest
) -> None:
    pf, z, signer = stack
    by = kinds(stack, sinks, "t1")
    dsn = email.message_from_bytes(by["DSN"], policy=policy.default)
    assert dsn["From"].addresses[0].addr_spec == f"MAILER-DAEMON@{ORG}"
    results = {what: verdict(data, signer) for what, data in by.items()}
    assert len(results) == 8, results
    if "zivmilter-first" in request.node.name:
        assert results == dict.fromkeys(results, "aligned"), results
        assert WARNING not in z.log()
        return
    # The wrong order: what zivmilter rewrites in the transaction (the kept notification, here
    # also the sendmail(1) one) loses the signer's signature; the re-injected ones are signed
    # on the re-injection listener. zivmilter sees the signature and says so, once per listener.
    rewritten = {"kept notification", "sendmail(1) notification"}
    assert {w for w, r in results.items() if r != "aligned"} == rewritten, results
    assert {results[w] for w in rewritten} == {"unsigned"}
    warnings = [line for line in z.log().splitlines() if WARNING in line]
    assert 1 <= len(warnings) <= 2, warnings
    assert all("list zivmilter before the DKIM signer in smtpd_milters" in w for w in warnings)
    # once per cause: another such message adds no warning
    plain = sinks[0]
    p0 = len(plain.received)
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.sendmail(f"alice@{ORG}", ["ivy@oldmail.example"], message("ivy@oldmail.example", "t2"))
    plain.wait_for(p0 + 1, timeout=60)
    assert len([line for line in z.log().splitlines() if WARNING in line]) == len(warnings)
