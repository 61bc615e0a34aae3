"""`zivmilter dns-check` on the tests' own DNS (NSD behind Unbound), good and broken records of
each kind: SPF, the DKIM key (and whether it is the signer's), DMARC, MTA-STS, TLS-RPT; and with
--postfix-config the milter order of a real Postfix configuration (issue 23)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness.dns import TestDns, Zone, shared_dns
from tests.harness.postfix import REPO, PostfixInstance

pytestmark = pytest.mark.integration
__all__ = ["shared_dns"]  # the session fixture, imported so pytest finds it here

SENDING_IP = "192.0.2.10"


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(spki).decode()


SIGNER_PEM, SIGNER_P = _key()
_, OTHER_P = _key()


def txt(owner: str, text: str) -> str:
    """A TXT line with the text cut into strings of at most 200 characters (a 2048-bit key)."""
    pieces = " ".join(f'"{text[i : i + 200]}"' for i in range(0, len(text), 200))
    return f"{owner} TXT {pieces}"


GOOD = Zone(
    "good.example",
    records=[
        txt("@", f"v=spf1 ip4:{SENDING_IP} -all"),
        txt("zm1._domainkey", f"v=DKIM1; k=rsa; p={SIGNER_P}"),
        txt("_dmarc", "v=DMARC1; p=reject; adkim=s; rua=mailto:dmarc@good.example"),
        txt("_mta-sts", "v=STSv1; id=20260101"),
        txt("_smtp._tls", "v=TLSRPTv1; rua=mailto:tlsrpt@good.example"),
    ],
)
BAD = Zone(
    "bad.example",
    records=[
        txt("@", "v=spf1 ip4:198.51.100.1 -all"),  # not the gateway's address
        txt("zm1._domainkey", f"v=DKIM1; k=rsa; p={OTHER_P}"),  # not the signer's key
        txt("_dmarc", "v=DMARC1; p=maybe"),  # an invalid policy
        txt("_smtp._tls", "v=TLSRPTv1; rua=nowhere"),  # no mailto:/https: address
    ],
)
EMPTY = Zone("empty.example", records=["@ A 192.0.2.99"])  # nothing published


@pytest.fixture(scope="module")
def dns_zones(shared_dns: TestDns) -> Iterator[TestDns]:
    shared_dns.set_zones([GOOD, BAD, EMPTY])
    yield shared_dns


def dns_check(tmp_path: Path, dns: TestDns, domain: str, *extra: str) -> tuple[int, dict[str, Any]]:
    cfg = {
        "organization": {"domains": [domain]},
        "transport": {"resolver": [dns.resolver]},
        "milter": {"socket": "inet:9900@127.0.0.1"},
    }
    (tmp_path / "zivmilter.yaml").write_text(yaml.safe_dump(cfg))
    key = tmp_path / "zm1.private"
    key.write_bytes(SIGNER_PEM)
    done = subprocess.run(
        [
            sys.executable, "-m", "zivmilter", "dns-check",
            "--config", str(tmp_path / "zivmilter.yaml"),
            "--sending-ip", SENDING_IP, "--selector", "zm1", "--dkim-key", str(key),
            "--json", *extra,
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def by_check(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in report["findings"]}


def test_good_records_pass(tmp_path: Path, dns_zones: TestDns) -> None:
    status, report = dns_check(tmp_path, dns_zones, "good.example")
    assert status == 0 and report["ok"], report
    found = by_check(report)
    assert set(found) == {"spf", "dkim", "dmarc", "mta-sts", "tls-rpt"}
    assert "matches the signer's key" in found["dkim"]["detail"]
    assert found["dmarc"]["detail"].startswith("p=reject: mail with a From at this domain")


def test_broken_records_each_say_what_to_publish(tmp_path: Path, dns_zones: TestDns) -> None:
    status, report = dns_check(tmp_path, dns_zones, "bad.example")
    assert status == 1 and not report["ok"]
    found = by_check(report)
    assert not any(f["ok"] for f in found.values()), found
    assert found["spf"]["publish"] == (
        f'bad.example. TXT "v=spf1 ip4:198.51.100.1 ip4:{SENDING_IP} -all"'
    )
    assert "not the signer's" in found["dkim"]["detail"]
    assert (
        found["dkim"]["publish"]
        == f'zm1._domainkey.bad.example. TXT "v=DKIM1; k=rsa; p={SIGNER_P}"'
    )
    assert "p='maybe'" in found["dmarc"]["detail"]
    assert found["dmarc"]["publish"].startswith('_dmarc.bad.example. TXT "v=DMARC1; p=')
    assert found["tls-rpt"]["publish"].startswith('_smtp._tls.bad.example. TXT "v=TLSRPTv1;')


def test_nothing_published(tmp_path: Path, dns_zones: TestDns) -> None:
    status, report = dns_check(tmp_path, dns_zones, "empty.example")
    assert status == 1
    found = by_check(report)
    assert found["spf"]["detail"] == "no SPF record"
    assert found["spf"]["publish"] == f'empty.example. TXT "v=spf1 ip4:{SENDING_IP} -all"'
    assert found["dkim"]["detail"] == "no DKIM key at zm1._domainkey.empty.example"
    assert found["dmarc"]["detail"] == "no DMARC record"
    assert "mta-sts" not in found and "tls-rpt" not in found  # optional: absent is fine


def test_milter_order_of_a_real_postfix_configuration(tmp_path: Path, dns_zones: TestDns) -> None:
    # The shipped snippets with a signer listed first: postconf reads what Postfix would use.
    signer = "inet:127.0.0.1:8891"
    pf = PostfixInstance(milter="inet:9900@127.0.0.1")
    pf.extra["smtpd_milters"] = f"{signer}, inet:127.0.0.1:9900"
    pf.directory = tmp_path / "pf"
    pf.directory.mkdir()
    pf.config_dir.mkdir()
    (pf.config_dir / "main.cf").write_text(pf.main_cf())
    (pf.config_dir / "master.cf").write_text(
        pf.master_cf().replace(f"127.0.0.1:{pf.reinject_port}", "127.0.0.1:10026")
    )
    status, report = dns_check(
        tmp_path, dns_zones, "good.example", "--postfix-config", str(pf.config_dir)
    )
    assert status == 1
    problems = {p["parameter"]: p for p in report["postfix"]}
    assert problems["smtpd_milters"]["fix"] == f"smtpd_milters = inet:127.0.0.1:9900, {signer}"
    assert problems["127.0.0.1:10026/inet/smtpd_milters"]["fix"] == f"-o smtpd_milters={signer}"
    assert "non_smtpd_milters" not in problems
