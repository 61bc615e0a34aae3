"""Encrypted copies through the real Sendmail (issue 26), set up as test_sendmail_e2e.py: one
message to a recipient with an OpenPGP key in the organization's key store (its MX offers tls:
the copy leaves through the relay Postfix's TLS-enforcing transport, never Sendmail) and one the
sender gave an access code (`encryption.pdf`: a PDF that qpdf opens with it). gpg and qpdf open
the copies to the original; the text is nowhere else on the wire, the code nowhere at all."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.harness import sendmail
from tests.harness.cli import zivmilter_in_process
from tests.harness.keys import GnuPG
from tests.harness.sink import Sink
from tests.integration.test_sendmail_e2e import CONFIG, Gateway, ca_file, message, sinks

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sendmail.available(), reason="no Sendmail: run scripts/install"),
]
_ = (ca_file, sinks)  # the module fixtures of test_sendmail_e2e.py, used here anew

MARKER = "SENDMAIL-ENC-7c1 the culture was negative"
CODE = "kestrel-valley-0291"


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    with GnuPG(tmp_path_factory.mktemp("gnupg") / "home") as g:
        yield g


@pytest.fixture(scope="module")
def gw(
    sinks: dict[str, Sink],
    ca_file: tuple[trustme.CA, str],
    gpg: GnuPG,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = {**CONFIG, "encryption": {"enabled": True, "pdf": True}}
    with Gateway(ca_file[1], config=config) as g:
        key = tmp_path_factory.mktemp("key") / "kim.pgp"
        key.write_bytes(gpg.generate("Kim <kim@weak.example>"))
        os.chmod(key.parent, 0o755)
        os.chmod(key, 0o644)
        got = zivmilter_in_process("keys", "import", str(key), "--config", str(g.z.config_file))
        assert got.returncode == 0 and ": usable" in got.stdout, got.stdout + got.stderr
        yield g


def test_pgp_and_pdf_copies_through_sendmail(
    gw: Gateway, sinks: dict[str, Sink], gpg: GnuPG, tmp_path: Path
) -> None:
    plain, tls = sinks["plain"], sinks["weak"]
    p0, t0 = len(plain.received), len(tls.received)
    data = message(
        "To: kim@weak.example, pat@oldmail.example\n"
        "Subject: Culture\n"
        "Message-ID: <sm-enc-1@hospital.example>\n"
        f"zivver-access-right: pat@oldmail.example access-code {CODE}\n",
        body=MARKER,
    )
    assert gw.send(["kim@weak.example", "pat@oldmail.example"], data) == {}
    (pdf_mail,) = plain.wait_for(p0 + 1, timeout=120)[p0:]
    (pgp,) = tls.wait_for(t0 + 1, timeout=120)[t0:]
    time.sleep(1)
    assert len(plain.received) == p0 + 1 and len(tls.received) == t0 + 1
    for r in (pdf_mail, pgp):
        assert MARKER.split()[0].encode() not in r.data and CODE.encode() not in r.data
        assert b"zivver-" not in r.data.lower() and b"x-zivmilter-route" not in r.data.lower()
    # the OpenPGP copy: through the relay's tls transport (the level found), never Sendmail
    assert pgp.rcpt_tos == ("kim@weak.example",)
    assert pgp.tls_version in ("TLSv1.2", "TLSv1.3")
    gw.relay.wait_for_log(
        r"postfix/zivmilter-tls/smtp\[\d+\]: \w+: to=<kim@weak\.example>.*status=sent"
    )
    assert "to=<kim@weak.example>" not in gw.sm.log()
    outer = email.message_from_bytes(pgp.data, policy=email.policy.default)
    inner = gpg.decrypt(list(outer.iter_parts())[1].get_payload(decode=True))
    assert MARKER.encode() in inner
    # the PDF copy: qpdf opens it with the access code
    assert pdf_mail.rcpt_tos == ("pat@oldmail.example",)
    (part,) = [p for p in pdf_mail.message().walk() if p.get_content_type() == "application/pdf"]
    src, out = tmp_path / "m.pdf", tmp_path / "plain.pdf"
    src.write_bytes(part.get_payload(decode=True))
    done = subprocess.run(
        ["qpdf", f"--password={CODE}", "--decrypt", str(src), str(out)], capture_output=True
    )
    assert done.returncode == 0, done.stderr
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(out), "-"], capture_output=True)
    assert MARKER in text.stdout.decode()
    assert CODE not in gw.z.log()
