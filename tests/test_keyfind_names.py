"""Key discovery's names (pure) and its cache: the published vectors of the WKD draft and of
RFC 7929, and what the cache reuses (tests/integration/test_keyfind.py asks real servers)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from zivmilter.core.keys import Candidate, KeyKind, KeySource
from zivmilter.errors import ConfigError
from zivmilter.transport.keyfind import (
    CachedSource,
    Found,
    OpenpgpkeySource,
    SmimeaSource,
    WkdSource,
    dane_owner,
    network_sources,
    wkd_hash,
    wkd_urls,
    zbase32,
)
from zivmilter.transport.resolver import Resolver


def test_wkd_hash_is_the_drafts_example() -> None:
    # draft-koch-openpgp-webkey-service, section 3.1: Joe.Doe@Example.ORG
    assert wkd_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"


def test_wkd_urls_of_the_drafts_example() -> None:
    advanced, direct = wkd_urls("Joe.Doe@Example.ORG")
    assert advanced == (
        "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/"
        "iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
    )
    assert direct == (
        "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
    )


def test_wkd_folds_only_ascii_case() -> None:
    assert wkd_hash("ÄRGER") == wkd_hash("Ärger") != wkd_hash("ärger")
    assert "?l=%C3%84rger" in wkd_urls("Ärger@example.de")[1]


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"\x00" * 5, "yyyyyyyy"), (b"\xff" * 5, "99999999"), (b"\xf0\xbf\xc7\x00\x00", "6n9hqyyy")],
)
def test_zbase32_alphabet(data: bytes, expected: str) -> None:
    assert zbase32(data) == expected


def test_openpgpkey_owner_is_rfc_7929s_example() -> None:
    # RFC 7929, section 3: hugh@example.com
    assert dane_owner("hugh@example.com", "_openpgpkey") == [
        "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.com"
    ]


def test_owner_names_try_the_local_part_as_given_then_lower_cased() -> None:
    owners = dane_owner("Hugh@Example.COM", "_smimecert")
    digest = hashlib.sha256(b"Hugh").digest()[:28].hex()
    assert owners[0] == f"{digest}._smimecert.example.com"
    assert owners[1].startswith("c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6.")


def test_a_name_that_is_no_address_is_refused() -> None:
    with pytest.raises(ValueError):
        dane_owner("no-at-sign", "_openpgpkey")


KEY = Candidate(KeyKind.OPENPGP, b"key", KeySource.WKD, "test")


class Counting:
    def __init__(self, answers: list[Found]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def find(self, address: str) -> Found:
        self.asked.append(address)
        return self.answers.pop(0)

    def candidates(self, address: str) -> Sequence[Candidate]:
        return self.find(address).candidates


def test_cache_reuses_an_answer_for_its_ttl_then_asks_again() -> None:
    now = [1000.0]
    source = Counting([Found((KEY,)), Found()])
    cache = CachedSource(source, ttl=300, clock=lambda: now[0])
    assert list(cache.candidates("a@example.org")) == [KEY]
    now[0] += 299
    assert list(cache.candidates("a@example.org")) == [KEY]
    assert source.asked == ["a@example.org"]
    now[0] += 2
    assert list(cache.candidates("a@example.org")) == []
    assert len(source.asked) == 2


def test_cache_keeps_a_failed_lookup_only_briefly() -> None:
    now = [0.0]
    source = Counting([Found(conclusive=False), Found((KEY,)), Found()])
    cache = CachedSource(source, ttl=3600, failure_ttl=60, clock=lambda: now[0])
    assert list(cache.candidates("a@example.org")) == []
    now[0] += 30
    assert list(cache.candidates("a@example.org")) == []  # not asked again yet
    now[0] += 31
    assert list(cache.candidates("a@example.org")) == [KEY]
    now[0] += 3000
    assert list(cache.candidates("a@example.org")) == [KEY]  # a real answer: the full TTL
    assert len(source.asked) == 2


def test_cache_takes_plain_sources_and_bounds_its_size() -> None:
    class Plain:
        asked = 0

        def candidates(self, address: str) -> Sequence[Candidate]:
            self.asked += 1
            return [KEY]

    plain = Plain()
    cache = CachedSource(plain, ttl=60, max_entries=2, clock=lambda: 0.0)
    for address in ("a@x.org", "b@x.org", "a@x.org", "c@x.org", "a@x.org", "b@x.org"):
        assert list(cache.candidates(address)) == [KEY]
    assert plain.asked == 4  # a, b, c, then b again (evicted as least recently used)


def test_an_unreadable_ca_file_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    for path in (str(bad), str(tmp_path / "missing.pem")):
        with pytest.raises(ConfigError, match=r"encryption\.wkd\.ca_file"):
            WkdSource(Resolver(("127.0.0.1",)), ca_file=path)


def test_network_sources_each_behind_a_cache() -> None:
    resolver = Resolver(("127.0.0.1",))
    sources = network_sources(resolver, cache_ttl=120, timeout=3)
    kinds = {KeySource.WKD: WkdSource, KeySource.OPENPGPKEY: OpenpgpkeySource,
             KeySource.SMIMEA: SmimeaSource}  # fmt: skip
    assert set(sources) == set(kinds)
    for name, cls in kinds.items():
        cached = sources[name]
        assert isinstance(cached, CachedSource) and cached.ttl == 120
        assert isinstance(cached.source, cls) and cached.source.timeout == 3
