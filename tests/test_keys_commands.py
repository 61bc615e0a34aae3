"""`zivmilter keys import|list|show|remove` as an admin runs them: real key files (GnuPG's
export, a CA's PEM and DER certificates), a real store; each listing says whether the milter
could use the key now and, if not, why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from tests.harness.cli import zivmilter_in_process as run
from tests.harness.keys import GnuPG, SmimeCA
from zivmilter import crypto


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    with GnuPG(tmp_path_factory.mktemp("gnupg") / "home") as g:
        yield g


@pytest.fixture
def cfg(tmp_path: Path) -> tuple[Path, SmimeCA]:
    key = tmp_path / "store.key"
    crypto.keygen(str(key))
    ca = SmimeCA()
    trust = ca.write_pem(tmp_path / "trust.pem")
    path = tmp_path / "zivmilter.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "organization": {"name": "Hospital", "domains": ["hospital.example"]},
                "store": {"path": str(tmp_path / "store"), "key_file": str(key)},
                "encryption": {"smime": {"trust_store": str(trust)}},
            }
        )
    )
    return path, ca


def test_import_list_show_remove_an_openpgp_key(
    gpg: GnuPG, cfg: tuple[Path, SmimeCA], tmp_path: Path
) -> None:
    config, _ = cfg
    cert = gpg.generate("Bob <bob@partner.example>")
    armored = tmp_path / "bob.asc"
    armored.write_bytes(gpg.run("--armor", "--export", "bob@partner.example"))
    fpr = gpg.run("--with-colons", "--fingerprint", "bob@partner.example").decode()
    fpr = next(ln.split(":")[9] for ln in fpr.splitlines() if ln.startswith("fpr"))
    got = run("keys", "import", str(armored), "--config", str(config))
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(f"imported {fpr}\topenpgp\timported ")
    assert "bob@partner.example: usable" in got.stdout
    # the same key again (binary this time) replaces it
    binary = tmp_path / "bob.pgp"
    binary.write_bytes(cert)
    again = run("keys", "import", str(binary), "--config", str(config))
    assert again.stdout.startswith(f"replaced {fpr}")
    listed = run("keys", "list", "--json", "--config", str(config))
    (entry,) = json.loads(listed.stdout)
    assert entry["ident"] == fpr and entry["kind"] == "openpgp"
    assert entry["addresses"] == ["bob@partner.example"]
    assert entry["status"] == {"bob@partner.example": "usable"}
    shown = run("keys", "show", "Bob@Partner.example", "--config", str(config))
    assert shown.returncode == 0 and shown.stdout.startswith(fpr)
    assert run("keys", "remove", fpr, "--config", str(config)).stdout == f"{fpr}: removed\n"
    gone = run("keys", "show", fpr, "--config", str(config))
    assert gone.returncode == 1 and gone.stderr == f"{fpr}: no imported key\n"
    assert run("keys", "remove", fpr, "--config", str(config)).returncode == 1


def test_import_smime_certificates_pem_and_der_with_their_status(
    cfg: tuple[Path, SmimeCA], tmp_path: Path
) -> None:
    config, ca = cfg
    good = ca.issue("dana@partner.example")
    unfit = ca.issue("erin@partner.example", key_encipherment=False)
    pem = tmp_path / "dana.pem"
    pem.write_bytes(good.pem + ca.cert.public_bytes(Encoding.PEM))  # with its chain

    der = tmp_path / "erin.der"
    der.write_bytes(unfit.der)
    assert run("keys", "import", str(pem), "--config", str(config)).returncode == 0
    got = run("keys", "import", str(der), "--config", str(config))
    assert got.returncode == 0  # stored, and the admin is told it cannot be used now
    assert "erin@partner.example: keyUsage does not allow keyEncipherment" in got.stdout
    listed = json.loads(run("keys", "list", "--json", "--config", str(config)).stdout)
    listed.sort(key=lambda e: e["addresses"])  # imported in the same second: any order
    assert [(e["kind"], e["addresses"], e["status"]) for e in listed] == [
        ("smime", ["dana@partner.example"], {"dana@partner.example": "usable"}),
        ("smime", ["erin@partner.example"],
         {"erin@partner.example": "keyUsage does not allow keyEncipherment"}),
    ]  # fmt: skip
    assert listed[0]["ident"] == format(good.cert.serial_number, "X")


def test_bad_files_and_addresses_are_clear_errors_and_store_nothing(
    gpg: GnuPG, cfg: tuple[Path, SmimeCA], tmp_path: Path
) -> None:
    config, _ = cfg
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"hello")
    got = run("keys", "import", str(junk), "--config", str(config))
    assert got.returncode == 2
    assert got.stderr == (
        f"zivmilter: error: {junk}: neither an OpenPGP certificate nor an X.509 certificate"
        " (unexpected EOF)\n"
    )
    gpg.generate("Carol <carol@partner.example>")
    key = tmp_path / "carol.pgp"
    key.write_bytes(gpg.export("carol@partner.example"))
    other = run("keys", "import", str(key), "--address", "x@partner.example", "--config",
                str(config))  # fmt: skip
    assert other.returncode == 2
    assert "x@partner.example is not a User ID of openpgp key" in other.stderr
    secret = tmp_path / "secret.asc"
    secret.write_bytes(gpg.run("--armor", "--export-secret-keys", "carol@partner.example"))
    refused = run("keys", "import", str(secret), "--config", str(config))
    assert refused.returncode == 2 and "holds a secret key" in refused.stderr
    assert run("keys", "list", "--json", "--config", str(config)).stdout.strip() == "[]"
    missing = run("keys", "remove", "--config", str(config))
    assert missing.returncode == 2 and "keys remove: give the IDENT" in missing.stderr
