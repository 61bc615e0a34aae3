"""Judging found keys (zivmilter/keys/judge.py) and the finder over sources (keys/finder.py):
real certificates made by GnuPG, pysequoia and a throwaway CA; what `explain` will show."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pysequoia
import pytest

from tests.harness.keys import GnuPG, SmimeCA
from zivmilter.core.keys import Candidate, KeyKind, KeyLookup, KeySource, RecipientKey, SkippedKey
from zivmilter.keys import judge
from zivmilter.keys.finder import SourcesKeyFinder
from zivmilter.transport.keyfind import CachedSource

PROV = "imported by the organization on 2026-12-01"


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    with GnuPG(tmp_path_factory.mktemp("gnupg") / "home") as g:
        yield g


@pytest.fixture(scope="module")
def ca() -> SmimeCA:
    return SmimeCA()


@pytest.fixture(scope="module")
def trust(ca: SmimeCA, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(ca.write_pem(tmp_path_factory.mktemp("trust") / "ca.pem"))


def pgp(material: bytes) -> Candidate:
    return Candidate(KeyKind.OPENPGP, material, KeySource.KEYSTORE, PROV)


def smime(material: bytes) -> Candidate:
    return Candidate(KeyKind.SMIME, material, KeySource.KEYSTORE, PROV)


def now() -> datetime:
    """The moment judged: a little ahead of the call, so that the keys a test has just made
    exist at it (GnuPG judges at exactly that moment, and a key made later does not exist yet).
    Taken at each call, not at import: the whole suite may reach a test long after collecting
    it."""
    return datetime.now(UTC) + timedelta(minutes=10)


def test_a_good_openpgp_key_is_trusted_with_its_fingerprint(gpg: GnuPG) -> None:
    cert = gpg.generate("Bob <bob@example.org>")
    got = judge.judge_openpgp(pgp(cert), "Bob@Example.org", now())
    assert isinstance(got, RecipientKey)
    assert got.ident == pysequoia.Cert.from_bytes(cert).fingerprint.upper()
    assert got.kind is KeyKind.OPENPGP and got.source is KeySource.KEYSTORE
    assert got.trusted_because.startswith(PROV)
    assert got.not_after is not None and got.not_after > now()


def test_an_armored_certificate_is_read_too(gpg: GnuPG) -> None:
    gpg.generate("Arm <arm@example.org>")
    armored = gpg.run("--armor", "--export", "arm@example.org")
    assert isinstance(judge.judge_openpgp(pgp(armored), "arm@example.org", now()), RecipientKey)


def test_an_openpgp_key_for_another_address_is_skipped(gpg: GnuPG) -> None:
    cert = gpg.generate("Carol <carol@example.org>")
    got = judge.judge_openpgp(pgp(cert), "mallory@example.org", now())
    assert isinstance(got, SkippedKey)
    assert got.reason == "no valid User ID for mallory@example.org"
    assert got.ident == pysequoia.Cert.from_bytes(cert).fingerprint.upper()


def test_a_sign_only_openpgp_key_is_skipped(gpg: GnuPG) -> None:
    cert = gpg.generate("Sig <sig@example.org>", usage="sign", algo="ed25519")
    got = judge.judge_openpgp(pgp(cert), "sig@example.org", now())
    assert isinstance(got, SkippedKey)
    assert got.reason.startswith("no usable encryption key")


def test_a_key_whose_only_encryption_subkey_expired_is_skipped(gpg: GnuPG) -> None:
    gpg.run("--quick-gen-key", "Sub <sub@example.org>", "ed25519", "sign", "never")
    fpr = next(
        ln.split(":")[9]
        for ln in gpg.run("--with-colons", "--fingerprint", "sub@example.org").decode().splitlines()
        if ln.startswith("fpr")
    )
    gpg.run("--quick-add-key", fpr, "cv25519", "encr", "1d")  # the primary never expires
    cert = gpg.export("sub@example.org")
    assert isinstance(judge.judge_openpgp(pgp(cert), "sub@example.org", now()), RecipientKey)
    later = judge.judge_openpgp(pgp(cert), "sub@example.org", now() + timedelta(days=3))
    assert isinstance(later, SkippedKey)
    assert later.reason.startswith("no usable encryption key")


def test_a_revoked_openpgp_key_is_skipped() -> None:
    tsk = pysequoia.Tsk.generate("Rev <rev@example.org>")
    cert = tsk.extract_certificate()
    revocation = cert.revoke(tsk.certifier())
    revoked = cert.merge(pysequoia.Cert.from_bytes(bytes(cert) + bytes(revocation)))
    got = judge.judge_openpgp(pgp(bytes(revoked)), "rev@example.org", now())
    assert isinstance(got, SkippedKey) and got.reason == "revoked"


def test_an_expired_openpgp_key_is_skipped_with_its_date() -> None:
    cert = pysequoia.Tsk.generate("Exp <exp@example.org>", validity_seconds=3600)
    public = bytes(cert.extract_certificate())
    later = now() + timedelta(days=2)
    got = judge.judge_openpgp(pgp(public), "exp@example.org", later)
    assert isinstance(got, SkippedKey)
    assert got.reason.startswith("expired ")
    # the same key is fine before that
    assert isinstance(judge.judge_openpgp(pgp(public), "exp@example.org", now()), RecipientKey)


def test_unreadable_openpgp_material_is_skipped_not_raised() -> None:
    got = judge.judge_openpgp(pgp(b"not a key"), "bob@example.org", now())
    assert isinstance(got, SkippedKey) and got.ident == ""
    assert got.reason.startswith("unreadable OpenPGP certificate")


def test_a_good_smime_certificate_is_trusted_by_its_chain(ca: SmimeCA, trust: str) -> None:
    issued = ca.issue("dana@example.org")
    got = judge.judge_smime(smime(issued.der), "dana@example.org", now(), trust)
    assert isinstance(got, RecipientKey)
    assert got.ident == format(issued.cert.serial_number, "X")
    assert "chain to the trust store" in got.trusted_because
    # PEM material too
    assert isinstance(
        judge.judge_smime(smime(issued.pem), "dana@example.org", now(), trust), RecipientKey
    )


@pytest.mark.parametrize(
    ("issue", "address", "reason"),
    [
        ({}, "eve@example.org", "eve@example.org is not in the subjectAltName"),
        ({"san": False}, "dana@example.org", "dana@example.org is not in the subjectAltName"),
        (
            {"key_encipherment": False},
            "dana@example.org",
            "keyUsage does not allow keyEncipherment",
        ),
        ({"valid_days": 2, "starts_days_ago": 5}, "dana@example.org", "expired "),
    ],
)
def test_unfit_smime_certificates_are_skipped(
    ca: SmimeCA, trust: str, issue: dict[str, object], address: str, reason: str
) -> None:
    issued = ca.issue("dana@example.org", **issue)  # type: ignore[arg-type]
    got = judge.judge_smime(smime(issued.der), address, now(), trust)
    assert isinstance(got, SkippedKey)
    assert got.reason.startswith(reason)


def test_an_smime_certificate_from_another_ca_is_not_trusted(trust: str) -> None:
    issued = SmimeCA("Somebody Else's CA").issue("dana@example.org")
    got = judge.judge_smime(smime(issued.der), "dana@example.org", now(), trust)
    assert isinstance(got, SkippedKey)
    assert got.reason.startswith("chain not trusted (")


def test_without_a_trust_store_no_smime_certificate_is_trusted(ca: SmimeCA) -> None:
    issued = ca.issue("dana@example.org")
    got = judge.judge_smime(smime(issued.der), "dana@example.org", now(), None)
    assert isinstance(got, SkippedKey)
    assert "encryption.smime.trust_store" in got.reason


@pytest.mark.parametrize("trust_store", [None, "trust"])
def test_a_dane_ee_smimea_certificate_needs_no_chain_but_passes_the_other_checks(
    trust_store: str | None, trust: str
) -> None:
    # SMIMEA usage 3 (DANE-EE): the DNSSEC-validated record vouches for the certificate itself,
    # from whatever CA (here one the trust store does not know) and with no trust store at all.
    issued = SmimeCA("A CA Nobody Trusts").issue("dana@example.org")
    store = None if trust_store is None else trust
    dane = Candidate(
        KeyKind.SMIME,
        issued.der,
        KeySource.SMIMEA,
        "SMIMEA DANE-EE(3) at x._smimecert.example.org (DNSSEC-validated)",
        needs_ca_chain=False,
    )
    got = judge.judge_smime(dane, "dana@example.org", now(), store)
    assert isinstance(got, RecipientKey)
    assert got.source is KeySource.SMIMEA
    assert "DANE-EE" in got.trusted_because
    # Still only for its own address; and the same certificate from a PKIX-EE(1) record needs
    # its chain like any other.
    other = judge.judge_smime(dane, "eve@example.org", now(), store)
    assert isinstance(other, SkippedKey)
    pkix = Candidate(KeyKind.SMIME, issued.der, KeySource.SMIMEA, "SMIMEA PKIX-EE(1)")
    assert isinstance(judge.judge_smime(pkix, "dana@example.org", now(), store), SkippedKey)


class Listed:
    def __init__(self, *found: Candidate) -> None:
        self.found = found
        self.asked: list[str] = []

    def candidates(self, address: str) -> Sequence[Candidate]:
        self.asked.append(address)
        return self.found


class Broken:
    def candidates(self, address: str) -> Sequence[Candidate]:
        raise RuntimeError("boom")


def test_the_finder_asks_in_order_and_says_what_it_skipped(
    gpg: GnuPG, ca: SmimeCA, trust: str
) -> None:
    good = gpg.generate("Finn <finn@example.org>")
    bad = ca.issue("finn@example.org", key_encipherment=False)
    first = Listed(Candidate(KeyKind.SMIME, bad.der, KeySource.SMIMEA, "DNSSEC-validated"))
    second = Listed(pgp(good))
    third = Listed(pgp(good))
    finder = SourcesKeyFinder(
        {
            KeySource.SMIMEA: first,
            KeySource.KEYSTORE: second,
            KeySource.WKD: third,
            KeySource.OPENPGPKEY: Broken(),
        },
        [KeySource.OPENPGPKEY, KeySource.SMIMEA, KeySource.KEYSTORE, KeySource.WKD],
        judge.validator(trust),
        ttl=60,
    )
    got = finder.lookup("finn@example.org")
    assert got.key is not None and got.key.source is KeySource.KEYSTORE
    assert [(s.source, s.reason) for s in got.skipped] == [
        (KeySource.SMIMEA, "keyUsage does not allow keyEncipherment")
    ]
    assert third.asked == []  # the first trusted key wins


def test_remote_findings_and_judgments_are_kept_for_the_ttl(gpg: GnuPG) -> None:
    cert = gpg.generate("Gus <gus@example.org>")
    wkd = Listed(Candidate(KeyKind.OPENPGP, cert, KeySource.WKD, "WKD"))
    judged: list[str] = []

    def counting(candidate: Candidate, address: str, now: datetime) -> RecipientKey | SkippedKey:
        judged.append(address)
        return judge.validator(None)(candidate, address, now)

    clock = [1000.0]
    # As the milter wires it (keys/wiring.py): a network source behind its own cache.
    cached = CachedSource(wkd, 60, clock=lambda: clock[0])
    finder = SourcesKeyFinder(
        {KeySource.WKD: cached}, [KeySource.WKD], counting, ttl=60, monotonic=lambda: clock[0]
    )
    first = finder.lookup("gus@example.org")
    assert first.key is not None
    assert finder.lookup("GUS@example.org") == first
    assert wkd.asked == ["gus@example.org"] and judged == ["gus@example.org"]
    clock[0] += 61
    assert finder.lookup("gus@example.org") == first
    assert len(wkd.asked) == 2 and len(judged) == 2


def test_the_key_store_is_read_every_time_its_keys_judged_once(gpg: GnuPG) -> None:
    cert = gpg.generate("Hal <hal@example.org>")
    store = Listed()
    judged: list[str] = []

    def counting(candidate: Candidate, address: str, now: datetime) -> RecipientKey | SkippedKey:
        judged.append(address)
        return judge.validator(None)(candidate, address, now)

    finder = SourcesKeyFinder({KeySource.KEYSTORE: store}, [KeySource.KEYSTORE], counting, 60)
    assert finder.lookup("hal@example.org") == KeyLookup()
    store.found = (pgp(cert),)  # `zivmilter keys import`: counts from the next message on
    assert finder.lookup("hal@example.org").key is not None
    assert finder.lookup("hal@example.org").key is not None
    assert len(store.asked) == 3 and len(judged) == 1
    store.found = ()  # `zivmilter keys remove`: likewise
    assert finder.lookup("hal@example.org") == KeyLookup()


def test_without_gnupg_a_key_is_skipped_and_the_tables_decide(
    gpg: GnuPG, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = gpg.key_of("Ivy <ivy@example.org>")
    monkeypatch.setenv("PATH", "/nonexistent")  # as on a host without the gnupg package
    got = judge.judge_openpgp(pgp(cert), "ivy@example.org", now())
    assert isinstance(got, SkippedKey)
    assert got.reason.startswith("gpg could not be run (")


def test_the_trust_store_must_be_a_readable_pem_bundle(tmp_path: Path) -> None:
    from tests.fakes import make_config
    from zivmilter.errors import ConfigError

    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=r"encryption\.smime\.trust_store: .*cannot read"):
        make_config({"encryption": {"smime": {"trust_store": str(missing)}}})
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match=r"encryption\.smime\.trust_store: .*no PEM certificate"):
        make_config({"encryption": {"smime": {"trust_store": str(junk)}}})


def test_the_judgments_kept_are_bounded_least_recently_used_first_and_expired_swept() -> None:
    judged: list[str] = []

    def counting(candidate: Candidate, address: str, now: datetime) -> RecipientKey | SkippedKey:
        judged.append(address)
        return SkippedKey(candidate.kind, "", candidate.source, "revoked")

    clock = [1000.0]
    wkd = Listed(Candidate(KeyKind.OPENPGP, b"key material", KeySource.WKD, "WKD"))
    finder = SourcesKeyFinder(
        {KeySource.WKD: wkd}, [KeySource.WKD], counting, ttl=600,
        monotonic=lambda: clock[0], max_entries=3,
    )  # fmt: skip
    for name in ("a", "b", "c"):
        finder.lookup(f"{name}@example.org")
    finder.lookup("a@example.org")  # used again: now the most recent
    finder.lookup("d@example.org")  # one too many: b, the least recently used, goes
    assert finder.judgments == 3
    judged.clear()
    finder.lookup("a@example.org")
    finder.lookup("c@example.org")
    assert judged == []  # kept
    finder.lookup("b@example.org")
    assert judged == ["b@example.org"]  # judged again: it had gone
    clock[0] += 601  # every judgment expired; the next one in sweeps them out
    finder.lookup("e@example.org")
    assert finder.judgments == 1


def test_the_default_bound_is_ten_thousand_judgments() -> None:
    clock = [0.0]
    many = Listed(*(Candidate(KeyKind.OPENPGP, b"%d" % n, KeySource.WKD, "WKD") for n in range(3)))

    def skip(candidate: Candidate, address: str, now: datetime) -> SkippedKey:
        return SkippedKey(candidate.kind, "", candidate.source, "revoked")

    finder = SourcesKeyFinder(
        {KeySource.WKD: many}, [KeySource.WKD], skip, ttl=3600, monotonic=lambda: clock[0]
    )
    for n in range(4_000):  # 12,000 judgments asked for, three per address
        finder.lookup(f"r{n}@example.org")
    assert finder.judgments == 10_000
