"""`zivmilter explain` for recipients' own keys (issue 26): the key used (kind, ident, source,
why trusted) and the keys skipped and why, in the text and in --json; pinned in a facts file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.harness.cli import zivmilter_in_process as run

FACTS = {
    "transport": {"partner.example": "tls"},
    "keys": {
        "bob@partner.example": {
            "kind": "openpgp",
            "ident": "0123456789ABCDEF0123456789ABCDEF01234567",
            "source": "wkd",
            "trusted_because": "WKD advanced method, PKIX-verified",
            "skipped": [
                {"kind": "smime", "ident": "1F", "source": "keystore",
                 "reason": "expired 2026-01-01"}
            ],
        },
        "carol@partner.example": {
            "skipped": [{"kind": "openpgp", "ident": "", "source": "openpgpkey",
                         "reason": "unreadable OpenPGP certificate (unexpected EOF)"}]
        },
    },
}  # fmt: skip


def setup(tmp_path: Path, enabled: bool = True) -> list[str]:
    msg = tmp_path / "m.eml"
    msg.write_bytes(
        b"From: alice@hospital.example\r\nTo: bob@partner.example, carol@partner.example\r\n"
        b"Subject: x\r\n\r\nhello\r\n"
    )
    cfg = tmp_path / "zivmilter.yaml"
    cfg.write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "encryption": {"enabled": enabled},
    }))  # fmt: skip
    facts = tmp_path / "facts.yaml"
    facts.write_text(yaml.safe_dump(FACTS))
    return ["explain", str(msg), "--config", str(cfg), "--facts", str(facts)]


def test_explain_text_names_the_key_and_what_was_skipped(tmp_path: Path) -> None:
    got = run(*setup(tmp_path))
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    (bob,) = [ln for ln in lines if ln.startswith("bob@partner.example ")]
    assert bob.split()[:5] == ["bob@partner.example", "encrypted", "own_key", "tls", "K"]
    why = lines.index(next(ln for ln in lines if ln.startswith("  bob@partner.example [K]: ")))
    assert lines[why].startswith(
        "  bob@partner.example [K]: encrypted to the recipient's own openpgp key 0123456789ABCDEF"
    )
    assert lines[why + 1 : why + 3] == [
        "    key: openpgp 0123456789ABCDEF0123456789ABCDEF01234567 from wkd:"
        " WKD advanced method, PKIX-verified",
        "    skipped smime 1F from keystore: expired 2026-01-01",
    ]
    assert (
        "    skipped openpgp (unreadable) from openpgpkey: unreadable OpenPGP certificate"
        " (unexpected EOF)"
    ) in lines


def test_explain_json_has_the_key_fields_only_where_keys_were_found(tmp_path: Path) -> None:
    got = run(*setup(tmp_path), "--json")
    by = {r["address"]: r for r in json.loads(got.stdout)["recipients"]}
    assert by["bob@partner.example"]["delivery"] == "encrypted"
    assert by["bob@partner.example"]["key"] == {
        "kind": "openpgp",
        "ident": "0123456789ABCDEF0123456789ABCDEF01234567",
        "source": "wkd",
        "trusted_because": "WKD advanced method, PKIX-verified",
    }
    assert by["carol@partner.example"]["delivery"] == "notification"
    assert "key" not in by["carol@partner.example"]
    assert by["carol@partner.example"]["skipped_keys"][0]["source"] == "openpgpkey"


def test_with_encryption_off_explain_is_as_before(tmp_path: Path) -> None:
    got = run(*setup(tmp_path, enabled=False), "--json")
    for r in json.loads(got.stdout)["recipients"]:
        assert r["delivery"] == "notification"
        assert "key" not in r and "skipped_keys" not in r


def test_a_bad_key_entry_in_the_facts_file_names_the_key(tmp_path: Path) -> None:
    args = setup(tmp_path)
    facts = Path(args[-1])
    facts.write_text(yaml.safe_dump({"keys": {"bob@partner.example": {"kind": "pgp"}}}))
    got = run(*args)
    assert got.returncode == 2
    assert "keys.bob@partner.example.kind: 'pgp' is not one of openpgp, smime" in got.stderr
