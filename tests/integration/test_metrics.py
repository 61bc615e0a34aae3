"""Prometheus metrics after real traffic: the milter's `metrics.listen` and the portal's
/metrics, scraped over HTTP and parsed with prometheus_client's own text parser.

A private Postfix with the real `zivmilter run` takes a secured message (three recipients: an
access code, email verification, direct delivery at pkix), one that is not selected, and one
whose sender may not submit. The real `zivmilter portal` then sees a wrong and a right access
code, a link locked by wrong codes, and a reply. Every count is asserted, and no label carries
an address or a message id.
"""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.postfix import REPO, PostfixInstance, free_port
from tests.harness.sandbox import bind_mounted
from tests.harness.sink import Sink
from tests.harness.zivmilter import ZivmilterProcess, attach
from zivmilter import defaults

pytestmark = pytest.mark.integration

SINK_IP = "127.0.0.30"
HOSTS = f"127.0.0.1 localhost\n{SINK_IP} x.example partner.example hospital.example\n"
TOKEN = "scrape-secret-7d1e"
CODE = "tulip-secret-42"


@dataclass
class World:
    pf: PostfixInstance
    z: ZivmilterProcess
    sink: Sink
    milter_metrics: str
    portal: str


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    mport, pport = free_port(), free_port()
    portal_url = f"http://127.0.0.1:{pport}"
    with bind_mounted("/etc/hosts", HOSTS), Sink(SINK_IP, 25) as sink:
        pf = PostfixInstance()
        z = attach(
            pf,
            facts={"transport": {"partner.example": "pkix"}},
            config={
                "metrics": {"listen": f"127.0.0.1:{mport}", "token": TOKEN},
                "portal": {"listen": f"127.0.0.1:{pport}", "base_url": portal_url + "/"},
                "selection": {"mode": "rules", "subject_triggers": ["[secure]"]},
                "policy": {"outbound_direct_delivery": {"domains": ["partner.example"]}},
            },
        )
        with z, pf:
            portal = subprocess.Popen(
                [sys.executable, "-m", "zivmilter", "portal", "--config", str(z.config_file)],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=(z.dir / "portal.log").open("ab"),
            )
            try:
                deadline = time.monotonic() + 30
                while True:
                    assert portal.poll() is None, (z.dir / "portal.log").read_text()
                    try:
                        if httpx.get(portal_url + "/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        assert time.monotonic() < deadline, "the portal did not answer"
                        time.sleep(0.1)
                yield World(pf, z, sink, f"http://127.0.0.1:{mport}/metrics", portal_url)
            finally:
                portal.terminate()
                portal.wait(timeout=20)


def send(pf: PostfixInstance, sender: str, rcpts: list[str], headers: str) -> None:
    data = (
        f"From: {sender}\r\nDate: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
        + headers.replace("\n", "\r\n")
        + "\r\nthe lab results\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
        s.sendmail(sender, rcpts, data)


def scrape(url: str, **kw: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(url, timeout=10, **kw)  # type: ignore[arg-type]
    assert r.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(
        v
        for (n, lbls), v in samples.items()
        if n == name and all((k, want) in lbls for k, want in labels.items())
    )


def csrf(html: str, action: str) -> str:
    m = re.search(
        r'action="[^"]*/' + re.escape(action) + r'(?:\?csrf=[^"]*)?"[^>]*>\s*'
        r'<input type="hidden" name="csrf" '
        r'value="([^"]+)"',
        html,
    )
    assert m, f"no form for {action}"
    return m.group(1)


def open_link(client: httpx.Client, token: str) -> str:
    first = client.get(f"/m/{token}")
    assert first.status_code == 200
    target = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', first.text)
    assert target
    return target.group(1)


def link_of(sink: Sink, address: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        for got in sink.received:
            if got.rcpt_tos == (address,):
                found = re.search(rb"/m/([A-Za-z0-9_-]+)", got.data)
                assert found, got.data
                return found.group(1).decode()
        assert time.monotonic() < deadline, f"no notification for {address}"
        time.sleep(0.2)


def test_milter_and_portal_metrics_count_real_traffic(world: World) -> None:
    pf = world.pf
    send(
        pf,
        "alice@hospital.example",
        ["carol@x.example", "erin@x.example", "dave@x.example", "bob@partner.example"],
        "To: carol@x.example, erin@x.example, dave@x.example, bob@partner.example\n"
        "Subject: [secure] lab results\n"
        f"zivver-access-right: carol@x.example access-code {CODE}\n"
        f"zivver-access-right: erin@x.example access-code {CODE}\n",
    )
    send(pf, "alice@hospital.example", ["dave@x.example"], "To: dave@x.example\nSubject: lunch\n")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(pf, "mallory@x.example", ["dave@x.example"], "Subject: [secure] hi\n")
    assert refused.value.smtp_code == 550

    milter = scrape(world.milter_metrics)
    assert value(milter, "zivmilter_messages_total", outcome="secured") == 1
    assert value(milter, "zivmilter_messages_total", outcome="passed") == 1
    assert value(milter, "zivmilter_messages_total", outcome="refused") == 1
    assert value(milter, "zivmilter_messages_total", outcome="tempfail") == 0
    assert value(milter, "zivmilter_end_of_message_seconds_count") == 3
    assert value(milter, "zivmilter_store_commit_seconds_count") == 1
    assert value(milter, "zivmilter_store_commit_batch_size_sum") == 1  # one save, one commit
    assert value(milter, "zivmilter_store_commit_batch_size_count") == 1
    rcpt = "zivmilter_recipients_total"
    assert value(milter, rcpt, method="custom_access_right", delivery="notification") == 2
    assert value(milter, rcpt, method="email_verification", delivery="notification") == 1
    assert value(milter, rcpt, delivery="direct", level="pkix") == 1
    assert value(milter, rcpt) == 4
    assert value(milter, "zivmilter_reinject_failures_total") == 0

    # The portal: the page exists only for the token.
    assert httpx.get(world.portal + "/metrics", timeout=10).status_code == 404
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(world.portal + "/metrics", headers=wrong, timeout=10).status_code == 404
    with httpx.Client(base_url=world.portal, timeout=30, follow_redirects=True) as client:
        here = open_link(client, link_of(world.sink, "carol@x.example"))
        token = csrf(client.get(here).text, "verify")
        assert client.post(here + "verify", data={"csrf": token, "code": "x"}).status_code == 401
        right = client.post(here + "verify", data={"csrf": token, "code": CODE})
        assert right.status_code == 200
        token = csrf(right.text, "reply")  # the form carries it in its action too, as posted
        r = client.post(here + f"reply?csrf={token}", data={"csrf": token, "text": "thanks"})
        assert r.status_code in (200, 303)
    with httpx.Client(base_url=world.portal, timeout=30, follow_redirects=True) as client:
        here = open_link(client, link_of(world.sink, "erin@x.example"))
        token = csrf(client.get(here).text, "verify")
        for _ in range(defaults.LOCKOUT_AFTER):
            client.post(here + "verify", data={"csrf": token, "code": "guess"})
        assert client.post(here + "verify", data={"csrf": token, "code": CODE}).status_code == 429

    auth = {"Authorization": f"Bearer {TOKEN}"}
    portal = scrape(world.portal + "/metrics", headers=auth)
    ver = "zivmilter_portal_verifications_total"
    assert value(portal, ver, method="access_code", outcome="ok") == 1
    assert (
        value(portal, ver, method="access_code", outcome="wrong") == 1 + defaults.LOCKOUT_AFTER - 1
    )
    assert value(portal, ver, method="access_code", outcome="locked") == 2
    assert value(portal, "zivmilter_portal_lockouts_total") == 1
    assert value(portal, "zivmilter_portal_replies_total", result="delivered") == 1

    # Bounded labels: no address, domain or message id anywhere in either page.
    for samples in (milter, portal):
        for _name, labels in samples:
            for _key, label in labels:
                assert "@" not in label and ".example" not in label, label
