"""`zivmilter explain` for recipients' own keys (issue 26): the key used (kind, ident, source,
why trusted) and the keys skipped and why, in the text and in --json; pinned in a facts file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.cli import zivmilter_in_process as run
from tests.harness.keys import GnuPG
from zivmilter import crypto

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


def _pdf_setup(tmp_path: Path) -> list[str]:
    msg = tmp_path / "p.eml"
    msg.write_bytes(
        b"From: alice@hospital.example\r\nTo: bob@partner.example, rem@partner.example\r\n"
        b"zivver-access-right: bob@partner.example access-code tulip-42-meadow\r\n"
        b"Subject: x\r\n\r\nhello\r\n"
    )
    cfg = tmp_path / "pdf.yaml"
    cfg.write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "encryption": {"pdf": True},
    }))  # fmt: skip
    facts = tmp_path / "pdf-facts.yaml"
    facts.write_text(yaml.safe_dump({
        "transport": {"partner.example": "tls"},
        "contacts": {"rem@partner.example": {"access_code": True}},
    }))  # fmt: skip
    return ["explain", str(msg), "--config", str(cfg), "--facts", str(facts)]


def test_explain_shows_an_encrypted_pdf_what_its_recipient_loses_and_why_none(
    tmp_path: Path,
) -> None:
    got = run(*_pdf_setup(tmp_path))
    assert got.returncode == 0, got.stderr
    assert "tulip-42-meadow" not in got.stdout  # the code is never printed
    lines = got.stdout.splitlines()
    (bob,) = [ln for ln in lines if ln.startswith("bob@partner.example ")]
    assert bob.split()[:5] == ["bob@partner.example", "encrypted", "pdf", "tls", "K"]
    assert "    encrypted as: pdf (AES-256, opened with the access code)" in lines
    assert (
        "    the recipient loses: no revoke: the PDF stays readable in the recipient's"
        " mailbox" in lines
    )
    assert (
        "    the recipient loses: no read status: the sender does not see whether or when"
        " it was opened" in lines
    )
    (rem,) = [ln for ln in lines if ln.startswith("rem@partner.example ")]
    assert rem.split()[:3] == ["rem@partner.example", "notification", "access_code"]
    assert (
        "    no encrypted PDF: a remembered access code is kept only as a hash, and a PDF"
        " needs the code itself; the recipient keeps the portal" in lines
    )


def test_explain_json_shows_the_kind_pdf(tmp_path: Path) -> None:
    got = run(*_pdf_setup(tmp_path), "--json")
    assert "tulip-42-meadow" not in got.stdout
    by = {r["address"]: r for r in json.loads(got.stdout)["recipients"]}
    bob = by["bob@partner.example"]
    assert (bob["delivery"], bob["method"], bob["encryption"]["kind"]) == (
        "encrypted", "pdf", "pdf")  # fmt: skip
    assert "no revoke: the PDF stays readable in the recipient's mailbox" in (
        bob["encryption"]["recipient_loses"])  # fmt: skip
    assert "key" not in bob
    rem = by["rem@partner.example"]
    assert rem["delivery"] == "notification" and "encryption" not in rem
    assert rem["pdf_refused"].startswith("no encrypted PDF: a remembered access code")


ALL_KINDS = {
    "carol@oldmail.example": ("notification", "email_verification", None),
    "bob@partner.example": ("direct", "transport_security", None),
    "kim@pgp.example": ("encrypted", "own_key", ("openpgp", "keystore")),
    "wendy@wkd.example": ("encrypted", "own_key", ("openpgp", "wkd")),
    "otto@dnskey.example": ("encrypted", "own_key", ("openpgp", "openpgpkey")),
    "sam@smime.example": ("encrypted", "own_key", ("smime", "keystore")),
    "sid@smimea.example": ("encrypted", "own_key", ("smime", "smimea")),
    "pat@pdf.example": ("encrypted", "pdf", None),
}


def test_explain_names_every_kind_of_recipient_of_one_message(tmp_path: Path) -> None:
    msg = tmp_path / "all.eml"
    msg.write_bytes(
        b"From: alice@hospital.example\r\nTo: " + ", ".join(ALL_KINDS).encode() + b"\r\n"
        b"zivver-access-right: pat@pdf.example access-code amber-heron-7731\r\n"
        b"Subject: x\r\n\r\nhello\r\n"
    )
    cfg = tmp_path / "all.yaml"
    cfg.write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "policy": {"transport_security_compliance": "pkix"},
        "encryption": {"enabled": True, "pdf": True},
    }))  # fmt: skip
    keys = {
        address: {"kind": key[0], "ident": f"ID-{address.split('@')[0]}", "source": key[1],
                  "trusted_because": f"found in {key[1]}"}
        for address, (_, _, key) in ALL_KINDS.items() if key
    }  # fmt: skip
    facts = tmp_path / "all-facts.yaml"
    facts.write_text(yaml.safe_dump({"transport": {"partner.example": "pkix"}, "keys": keys}))
    got = run("explain", str(msg), "--config", str(cfg), "--facts", str(facts), "--json")
    assert got.returncode == 0, got.stderr
    assert "amber-heron-7731" not in got.stdout
    by = {r["address"]: r for r in json.loads(got.stdout)["recipients"]}
    for address, (delivery, method, key) in ALL_KINDS.items():
        r = by[address]
        assert (r["delivery"], r["method"]) == (delivery, method), address
        if key is None:
            assert "key" not in r, address
        else:
            assert (r["key"]["kind"], r["key"]["source"]) == key, address
    assert by["pat@pdf.example"]["encryption"]["kind"] == "pdf"
    assert all("encryption" not in r for a, r in by.items() if a != "pat@pdf.example")


def test_explain_counts_a_file_saved_with_bare_lf_as_the_mta_passes_it(tmp_path: Path) -> None:
    args = _pdf_setup(tmp_path)
    msg = Path(args[1])
    wire = msg.read_bytes()
    msg.write_bytes(wire.replace(b"\r\n", b"\n"))
    Path(args[3]).write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "encryption": {"pdf": True, "pdf_max_bytes": len(wire) - 1},
    }))  # fmt: skip
    by = {r["address"]: r for r in json.loads(run(*args, "--json").stdout)["recipients"]}
    assert f"the message is {len(wire)} bytes" in by["bob@partner.example"]["pdf_refused"]


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    with GnuPG(tmp_path_factory.mktemp("gnupg") / "home") as g:
        yield g


def _store_setup(tmp_path: Path, enabled: bool = True) -> tuple[list[str], Path]:
    """A message to bob, a configuration with a store; no facts file."""
    msg = tmp_path / "s.eml"
    msg.write_bytes(
        b"From: alice@hospital.example\r\nTo: bob@partner.example\r\nSubject: x\r\n\r\nhello\r\n"
    )
    key = tmp_path / "store.key"
    crypto.keygen(str(key))
    cfg = tmp_path / "store.yaml"
    cfg.write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "store": {"path": str(tmp_path / "store"), "key_file": str(key)},
        "encryption": {"enabled": enabled},
    }))  # fmt: skip
    return ["explain", str(msg), "--config", str(cfg)], cfg


def test_explain_without_facts_uses_a_key_imported_into_the_store(
    gpg: GnuPG, tmp_path: Path
) -> None:
    args, cfg = _store_setup(tmp_path)
    assert run("store", "migrate", "--config", str(cfg)).returncode == 0  # the store exists
    before = {r["address"]: r for r in json.loads(run(*args, "--json").stdout)["recipients"]}
    assert before["bob@partner.example"]["method"] == "email_verification"
    gpg.generate("Bob <bob@partner.example>")
    exported = tmp_path / "bob.asc"
    exported.write_bytes(gpg.run("--armor", "--export", "bob@partner.example"))
    imported = run("keys", "import", str(exported), "--config", str(cfg))
    assert imported.returncode == 0, imported.stderr
    fpr = imported.stdout.split()[1]
    got = run(*args, "--json")
    assert got.returncode == 0, got.stderr
    out = json.loads(got.stdout)
    (bob,) = out["recipients"]
    assert (bob["delivery"], bob["method"], bob["rule"]) == ("encrypted", "own_key", "K")
    assert bob["key"]["source"] == "keystore" and bob["key"]["ident"] == fpr
    assert bob["key"]["trusted_because"].startswith("imported by the organization on ")
    assert out["keys"].startswith(f"the organization's key store ({tmp_path / 'store'}); ")
    text = run(*args).stdout.splitlines()
    (line,) = [ln for ln in text if ln.startswith("bob@partner.example ")]
    assert line.split()[:5] == ["bob@partner.example", "encrypted", "own_key", "none", "K"]
    assert f"    key: openpgp {fpr} from keystore: imported by the organization on" in "\n".join(
        text
    )
    assert text[-1].startswith("Keys: the organization's key store (")


def test_explain_without_a_store_says_so_and_makes_none(tmp_path: Path) -> None:
    args, _cfg = _store_setup(tmp_path)
    got = run(*args)
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1] == (
        f"Keys: no store at {tmp_path / 'store'} yet, so no imported keys; WKD, OPENPGPKEY"
        " and SMIMEA are not asked by explain (pin them with --facts)"
    )
    assert not (tmp_path / "store").exists()


def test_explain_with_encryption_off_neither_reads_the_store_nor_says_a_word_of_keys(
    tmp_path: Path,
) -> None:
    args, _cfg = _store_setup(tmp_path, enabled=False)
    got = run(*args)
    assert got.returncode == 0, got.stderr
    assert "Keys:" not in got.stdout and not (tmp_path / "store").exists()
    assert "keys" not in json.loads(run(*args, "--json").stdout)


# _pdf_setup's message as a PDF lays it out: From, To and Subject as given, and "hello" and its
# line end.
PDF_SETUP_FIELDS = ("alice@hospital.example", "bob@partner.example, rem@partner.example", "x")
PDF_SETUP_TEXT = sum(len(f) for f in PDF_SETUP_FIELDS) + len("hello\n")


@pytest.mark.parametrize(
    ("key", "line_end", "words"),
    [
        pytest.param(
            "pdf_max_bytes",
            b"\r\n",
            "the message is {size} bytes, more than encryption.pdf_max_bytes ({cap}), and a PDF is"
            " built in memory at end of message",
            id="size",
        ),
        pytest.param(
            "pdf_max_text_bytes",
            b"\r\n",
            "the message's text is {size} bytes, more than encryption.pdf_max_text_bytes ({cap}),"
            " and laying it out takes seconds at end of message",
            id="text-crlf",
        ),
        pytest.param(
            "pdf_max_text_bytes",
            b"\n",
            "the message's text is {size} bytes, more than encryption.pdf_max_text_bytes ({cap}),"
            " and laying it out takes seconds at end of message",
            id="text-lf",
        ),
    ],
)
def test_explain_says_a_message_over_a_pdf_cap_keeps_the_portal(
    tmp_path: Path, key: str, line_end: bytes, words: str
) -> None:
    args = _pdf_setup(tmp_path)
    msg = Path(args[1])
    size = len(msg.read_bytes()) if key == "pdf_max_bytes" else PDF_SETUP_TEXT
    msg.write_bytes(msg.read_bytes().replace(b"\r\n", line_end))
    Path(args[3]).write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "encryption": {"pdf": True, key: size - 1},
    }))  # fmt: skip
    why = (
        "no encrypted PDF: "
        + words.format(size=size, cap=size - 1)
        + "; the recipient keeps the portal"
    )
    got = run(*args)
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    (bob,) = [ln for ln in lines if ln.startswith("bob@partner.example ")]
    assert bob.split()[:3] == ["bob@partner.example", "notification", "custom_access_right"]
    assert f"    {why}" in lines
    by = {r["address"]: r for r in json.loads(run(*args, "--json").stdout)["recipients"]}
    assert by["bob@partner.example"]["pdf_refused"] == why
    assert "encryption" not in by["bob@partner.example"]


def test_explain_makes_a_pdf_of_pdf_max_text_bytes_of_text(tmp_path: Path) -> None:
    args = _pdf_setup(tmp_path)
    Path(args[3]).write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "encryption": {"pdf": True, "pdf_max_text_bytes": PDF_SETUP_TEXT},
    }))  # fmt: skip
    by = {r["address"]: r for r in json.loads(run(*args, "--json").stdout)["recipients"]}
    assert by["bob@partner.example"]["encryption"]["kind"] == "pdf"
    assert "pdf_refused" not in by["bob@partner.example"]
