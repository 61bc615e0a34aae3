"""The store's contract for trusted devices (issue 25 part 3): a browser is remembered for one
address until a date, by a digest of its token; it opens that address's links only, until it
expires or `contacts forget` ends it; listing shows how many, never a token."""

from __future__ import annotations

import hashlib

from tests.store.common import Clock, new_message
from zivmilter.store import Store

DAY = 24 * 3600.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_a_remembered_browser_opens_its_address_only_until_it_expires(
    st: Store, clock: Clock
) -> None:
    st.remember_device("Bob@Example.net", _digest("t1"), clock() + 30 * DAY)
    assert st.use_device("bob@example.net", _digest("t1"))
    assert not st.use_device("carol@example.net", _digest("t1"))  # never across addresses
    assert not st.use_device("bob@example.net", _digest("t2"))  # an unknown token
    clock.t += 30 * DAY
    assert not st.use_device("bob@example.net", _digest("t1"))  # expired
    assert st.devices() == {}


def test_devices_are_counted_and_ended_per_address_with_audit_events(
    st: Store, clock: Clock
) -> None:
    mid = st.save_message(new_message()).id
    st.remember_device("bob@example.net", _digest("t1"), clock() + DAY)
    st.remember_device("bob@example.net", _digest("t2"), clock() + DAY)
    st.remember_device("carol@example.net", _digest("t3"), clock() + DAY)
    assert st.devices() == {"bob@example.net": 2, "carol@example.net": 1}
    assert st.use_device("bob@example.net", _digest("t2"), mid)
    assert st.forget_devices("BOB@example.net") == 2
    assert st.forget_devices("bob@example.net") == 0
    assert not st.use_device("bob@example.net", _digest("t2"))
    assert st.devices() == {"carol@example.net": 1}
    events = [(e.event, e.recipient, e.detail) for e in st.export_events()]
    assert ("device-remembered", "bob@example.net", "") in events
    assert ("devices-ended", "bob@example.net", "2") in events
    assert [e.event for e in st.events(mid)].count("device-used") == 1
    assert events.count(("devices-ended", "bob@example.net", "2")) == 1  # none for nothing
