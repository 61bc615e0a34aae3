"""Who may submit (SPEC 7) on a real Postfix: SMTP AUTH through Dovecot SASL on a submission port
with STARTTLS, trusted networks, and the sender accounts managed with `zivmilter account`.

Postfix itself lets every loopback client relay here (mynetworks 127.0.0.0/8), so every refusal
below is zivmilter's. Clients outside the trusted network connect from 127.0.0.9; zivmilter
trusts 127.0.0.1/32 only. Whatever is accepted ends at one sink (Postfix's relayhost).
"""

from __future__ import annotations

import smtplib
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.harness.cli import zivmilter
from tests.harness.postfix import HOST, MYHOSTNAME, PostfixInstance, free_port
from tests.harness.sasl import DovecotSasl
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess, attach

pytestmark = pytest.mark.integration

OUTSIDE_CLIENT = "127.0.0.9"
SINK_IP = "127.0.0.31"
USERS = {"app1": "secret-app1", "app2": "secret-app2"}
CONFIG: dict[str, Any] = {
    "organization": {"domains": ["hospital.example", "clinic.example"]},
    "submission": {
        "trusted_networks": ["127.0.0.1/32"],
        "logins": {"app1": ["hospital.example"], "app2": ["lab@clinic.example"]},
        "spf": False,
        "any_address_of_own_domains": True,
    },
}
# Recipients get email verification (no facts about their domain): one notification each.
FACTS: dict[str, Any] = {"transport": {"partner.example": "none"}}


class SubmissionPostfix(PostfixInstance):
    """The test Postfix plus a submission service: STARTTLS required, AUTH after STARTTLS only."""

    def __init__(self, sasl: DovecotSasl, cert: Path, key: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sasl = sasl
        self.cert, self.key = cert, key
        self.submission_port = free_port()

    def master_cf(self) -> str:
        options = {
            "syslog_name": "postfix/submission",
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_cert_file": str(self.cert),
            "smtpd_tls_key_file": str(self.key),
            "smtpd_tls_auth_only": "yes",
            **self.sasl.postfix_settings(),
            "smtpd_relay_restrictions": "permit_sasl_authenticated,permit_mynetworks,reject",
        }
        service = f"{HOST}:{self.submission_port} inet n - n - - smtpd\n" + "".join(
            f"  -o {name}={value}\n" for name, value in options.items()
        )
        return super().master_cf() + service

    def start(self) -> SubmissionPostfix:
        super().start()
        try:
            self._wait_listening(self.submission_port)
        except BaseException:
            self.stop()
            raise
        return self


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files() -> Iterator[tuple[Path, Path, ssl.SSLContext]]:
    ca = trustme.CA()
    leaf = ca.issue_cert(MYHOSTNAME, HOST)  # smtplib checks the name it connected to
    folder = Path(tempfile.mkdtemp(prefix="zivmilter-submission-tls-"))
    folder.chmod(0o755)
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    for path in (cert, key):
        path.chmod(0o644)  # test key: Postfix's smtpd reads it after dropping to user postfix
    client = ssl.create_default_context()
    ca.configure_trust(client)
    yield cert, key, client
    for path in (cert, key):
        path.unlink()
    folder.rmdir()


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink(SINK_IP, 25) as s:
        yield s


@pytest.fixture(scope="module")
def sasl() -> Iterator[DovecotSasl]:
    with DovecotSasl(USERS) as server:
        yield server


def _gateway(
    sasl: DovecotSasl,
    tls: tuple[Path, Path, ssl.SSLContext],
    config: dict[str, Any],
    facts: dict[str, Any] | None,
) -> tuple[SubmissionPostfix, ZivmilterProcess]:
    pf = SubmissionPostfix(sasl, tls[0], tls[1], relayhost=f"[{SINK_IP}]:25")
    return pf, attach(pf, config=config, facts=facts)


@pytest.fixture(scope="module")
def gateway(
    sasl: DovecotSasl, tls_files: tuple[Path, Path, ssl.SSLContext], sink: Sink
) -> Iterator[SubmissionPostfix]:
    pf, z = _gateway(sasl, tls_files, CONFIG, FACTS)
    with z, pf:
        yield pf


def message(sender: str, rcpt: str = "bob@partner.example", subject: str = "Lab results") -> bytes:
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Date: Tue, 24 Nov 2026 09:00:00 +0100\r\nMessage-ID: <{time.monotonic_ns()}@test>\r\n"
        "\r\nThe lab results.\r\n"
    ).encode()


def submit(
    pf: SubmissionPostfix,
    client_tls: ssl.SSLContext,
    sender: str,
    *,
    login: tuple[str, str] | None = None,
    source: str = OUTSIDE_CLIENT,
    header_from: str | None = None,
) -> tuple[int, str]:
    """One message over the submission port; the final reply to DATA (or the refusal before)."""
    with smtplib.SMTP(HOST, pf.submission_port, timeout=60, source_address=(source, 0)) as s:
        s.starttls(context=client_tls)
        if login is not None:
            s.login(*login)
        try:
            s.sendmail(sender, ["bob@partner.example"], message(header_from or sender))
        except smtplib.SMTPDataError as exc:
            error = exc.smtp_error
            text = error if isinstance(error, str) else error.decode("ascii", "replace")
            return exc.smtp_code, text
    return 250, "ok"


def arrived_for(sink: Sink, before: int) -> None:
    got = sink.wait_for(before + 1)[before:]
    assert any("bob@partner.example" in r.rcpt_tos for r in got), got


# --- tests ---------------------------------------------------------------------------------


def test_authenticated_allowed_login_passes(
    gateway: SubmissionPostfix, tls_files: tuple[Path, Path, ssl.SSLContext], sink: Sink
) -> None:
    before = len(sink.received)
    code, text = submit(
        gateway, tls_files[2], "alice@hospital.example", login=("app1", USERS["app1"])
    )
    assert code == 250, text
    arrived_for(sink, before)
    gateway.wait_for_log(
        r"postfix/submission/smtpd\[\d+\]: \w+: client=\S+\[127\.0\.0\.9\].*"
        r"sasl_username=app1"
    )


def test_login_allowed_for_one_address_only(
    gateway: SubmissionPostfix, tls_files: tuple[Path, Path, ssl.SSLContext]
) -> None:
    code, _ = submit(gateway, tls_files[2], "lab@clinic.example", login=("app2", USERS["app2"]))
    assert code == 250
    code, text = submit(
        gateway, tls_files[2], "other@clinic.example", login=("app2", USERS["app2"])
    )
    assert (code, text) == (550, "5.7.1 login app2 may not send as other@clinic.example")


def test_login_sending_for_another_domain_is_rejected(
    gateway: SubmissionPostfix, tls_files: tuple[Path, Path, ssl.SSLContext], sink: Sink
) -> None:
    before = len(sink.received)
    code, text = submit(gateway, tls_files[2], "x@clinic.example", login=("app1", USERS["app1"]))
    assert code == 550 and text == "5.7.1 login app1 may not send as x@clinic.example"
    # Envelope and header disagreeing does not help: the From header is what counts.
    code, text = submit(
        gateway,
        tls_files[2],
        "alice@hospital.example",
        login=("app1", USERS["app1"]),
        header_from="x@clinic.example",
    )
    assert code == 550 and "may not send as x@clinic.example" in text
    time.sleep(1)
    assert len(sink.received) == before


def test_login_is_refused_even_from_a_trusted_client(
    gateway: SubmissionPostfix, tls_files: tuple[Path, Path, ssl.SSLContext]
) -> None:
    code, text = submit(
        gateway, tls_files[2], "x@clinic.example", login=("app1", USERS["app1"]), source="127.0.0.1"
    )
    assert code == 550 and "login app1 may not send as x@clinic.example" in text


def test_wrong_password_is_refused_by_postfix(
    gateway: SubmissionPostfix, tls_files: tuple[Path, Path, ssl.SSLContext]
) -> None:
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        submit(gateway, tls_files[2], "alice@hospital.example", login=("app1", "wrong"))
    assert caught.value.smtp_code == 535


def test_unauthenticated_client_outside_trusted_networks_is_rejected(
    gateway: SubmissionPostfix, tls_files: tuple[Path, Path, ssl.SSLContext], sink: Sink
) -> None:
    before = len(sink.received)
    code, text = submit(gateway, tls_files[2], "alice@hospital.example")
    assert code == 550, text
    assert text.startswith(
        "5.7.1 not allowed to submit: not authenticated; client 127.0.0.9 is "
        "not in submission.trusted_networks"
    ), text
    time.sleep(1)
    assert len(sink.received) == before


def test_trusted_client_passes_without_login(
    gateway: SubmissionPostfix, tls_files: tuple[Path, Path, ssl.SSLContext], sink: Sink
) -> None:
    before = len(sink.received)
    code, text = submit(gateway, tls_files[2], "alice@hospital.example", source="127.0.0.1")
    assert code == 250, text
    arrived_for(sink, before)


# --- sender accounts from the store ----------------------------------------------------------


zivmilter_cli = zivmilter


@pytest.fixture(scope="module")
def account_gateway(
    sasl: DovecotSasl, tls_files: tuple[Path, Path, ssl.SSLContext], sink: Sink
) -> Iterator[tuple[SubmissionPostfix, ZivmilterProcess]]:
    config = {**CONFIG, "submission": {**CONFIG["submission"], "any_address_of_own_domains": False}}
    # No facts file: the milter's live facts, and its accounts from the store.
    pf, z = _gateway(sasl, tls_files, config, None)
    with z, pf:
        yield pf, z


def test_sender_must_be_an_active_account(
    account_gateway: tuple[SubmissionPostfix, ZivmilterProcess],
    tls_files: tuple[Path, Path, ssl.SSLContext],
    sink: Sink,
) -> None:
    pf, z = account_gateway
    client = tls_files[2]
    login = ("app1", USERS["app1"])
    code, text = submit(pf, client, "alice@hospital.example", login=login)
    unknown = "5.7.1 sender alice@hospital.example has no account at this gateway"
    assert (code, text) == (550, unknown)

    done = zivmilter_cli("account", "add", "alice@hospital.example", "--config", str(z.config_file))
    assert done.returncode == 0, done.stderr
    before = len(sink.received)
    code, text = submit(pf, client, "alice@hospital.example", login=login)
    assert code == 250, text
    arrived_for(sink, before)

    done = zivmilter_cli(
        "account", "disable", "alice@hospital.example", "--config", str(z.config_file)
    )
    assert done.returncode == 0, done.stderr
    code, text = submit(pf, client, "Alice@Hospital.example", login=login)
    assert (code, text) == (550, "5.7.1 sender account alice@hospital.example is disabled")
