"""The store's contract for recipients' imported keys (issue 26, `zivmilter keys`): kept as
given per ident for the addresses named at import, found by address, replaced by a second
import of the same ident, removed by ident; import and removal are audited."""

from __future__ import annotations

from tests.store.common import Clock
from zivmilter.store import Store, StoredKey

PGP = StoredKey("A" * 40, "openpgp", ("bob@example.net",), b"\x99\x01pgp")
CERT = StoredKey("1F2E", "smime", ("bob@example.net", "b.smith@example.net"), b"0\x82der")


def test_keys_are_found_by_address_and_by_ident(st: Store, clock: Clock) -> None:
    assert st.import_recipient_key(PGP)
    clock.t += 10
    assert st.import_recipient_key(CERT)
    found = st.recipient_keys("Bob@Example.net")
    assert [(k.ident, k.kind, k.material) for k in found] == [
        ("A" * 40, "openpgp", b"\x99\x01pgp"),
        ("1F2E", "smime", b"0\x82der"),
    ]
    assert [k.ident for k in st.recipient_keys("b.smith@example.net")] == ["1F2E"]
    assert st.recipient_keys("carol@example.net") == []
    assert st.recipient_keys("not an address") == []
    got = st.recipient_key("1F2E")
    assert got is not None
    assert got.addresses == ("b.smith@example.net", "bob@example.net")
    assert got.imported_at is not None and got.imported_at.timestamp() == int(clock())
    assert [k.ident for k in st.recipient_keys()] == ["A" * 40, "1F2E"]


def test_a_second_import_replaces_the_key_and_its_addresses(st: Store) -> None:
    assert st.import_recipient_key(CERT)
    renewed = StoredKey("1F2E", "smime", ("bob@example.net",), b"0\x82new")
    assert not st.import_recipient_key(renewed)
    assert st.recipient_keys("b.smith@example.net") == []
    got = st.recipient_key("1F2E")
    assert got is not None and got.material == b"0\x82new"
    assert got.addresses == ("bob@example.net",)


def test_a_removed_key_is_gone_and_both_steps_are_audited(st: Store) -> None:
    st.import_recipient_key(PGP)
    assert st.remove_recipient_key("A" * 40)
    assert not st.remove_recipient_key("A" * 40)
    assert st.recipient_keys("bob@example.net") == []
    assert st.recipient_key("A" * 40) is None
    events = [(e.event, e.detail) for e in st.export_events()]
    assert events == [("key-imported", "openpgp " + "A" * 40), ("key-removed", "A" * 40)]
