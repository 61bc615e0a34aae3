"""`Store.request_scope`: the portal runs each request's store work inside one, so that its calls
share a database connection. What must hold whatever a backend holds for the scope: every call
reads the database as it is then (a revocation by another node ends the very next call, within
the same request), and a scope that ends with a fault leaves the store as usable as before."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.store.common import MARK_BODY, new_message
from zivmilter.store import Store


def test_a_revocation_by_another_node_stops_the_next_call_in_the_same_scope(
    st: Store, reopen: Callable[..., Store]
) -> None:
    saved = st.save_message(new_message())
    other = reopen()  # another portal node on the same database
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None
    with st.request_scope():
        found = st.link_view(rec.id)
        assert found is not None and found.recipient.message.revoked_at is None
        content = st.open_content(saved.id)
        assert content is not None
        with content:
            assert MARK_BODY.encode() in content.read()
        st.save_portal_view(saved.id, b"the kept view")
        assert st.portal_view(saved.id) == b"the kept view"
        assert st.mark_opened(rec.id)

        assert other.revoke(saved.id, "sender withdrew it")

        found = st.link_view(rec.id)
        assert found is not None and found.recipient.message.revoked_at is not None
        assert st.open_content(saved.id) is None
        assert st.portal_view(saved.id) is None
        assert not st.mark_opened(rec.id)


def test_a_scope_ended_by_a_fault_leaves_the_store_usable(st: Store) -> None:
    saved = st.save_message(new_message())
    rec = st.find_recipient_by_token(saved.tokens["bob@example.net"])
    assert rec is not None
    for _ in range(3):  # more scopes than a small pool has connections, each ended by a fault
        with pytest.raises(RuntimeError), st.request_scope():
            assert st.mark_opened(rec.id)
            raise RuntimeError("the page failed")
    with st.request_scope(), st.request_scope():  # nested: one scope
        assert st.link_view(rec.id) is not None
    assert [e.event for e in st.events(saved.id)].count("opened") == 3
