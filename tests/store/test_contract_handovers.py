"""The handover contract (interfaces.HandoverStore), against every backend: what a client's retry
of a tempfailed message finds of the first try (gateway.py uses it)."""

from __future__ import annotations

from typing import Any

from tests.store.common import Clock, new_message

KEY = "a" * 64


def test_a_retry_finds_the_links_and_the_copies_taken(st: Any) -> None:
    saved = st.save_message(new_message())
    st.remember_handover(saved.id, KEY, saved.tokens)
    st.mark_handed(saved.id, "notification to carol@example.com")
    st.mark_handed(saved.id, "notification to carol@example.com")  # a mark counts once
    found = st.find_handover(KEY, 3600)
    assert found is not None and found.message_id == saved.id
    assert found.tokens == saved.tokens and found.tokens  # the same links again
    assert found.handed == {"notification to carol@example.com"}
    assert st.find_handover("b" * 64, 3600) is None
    assert "tokens=" not in repr(found) and next(iter(saved.tokens.values())) not in repr(found)


def test_no_handover_outside_the_window_or_once_revoked_or_ended(st: Any, clock: Clock) -> None:
    first = st.save_message(new_message())
    st.remember_handover(first.id, KEY, first.tokens)
    clock.t += 7200
    assert st.find_handover(KEY, 3600) is None
    assert st.find_handover(KEY, 10_000) is not None
    assert st.revoke(first.id)
    assert st.find_handover(KEY, 10_000) is None  # its links are dead: nothing to reuse
    second = st.save_message(new_message())
    st.remember_handover(second.id, KEY, second.tokens)
    st.end_handover(second.id)
    assert st.find_handover(KEY, 10_000) is None


def test_a_message_saved_with_its_retry_key_is_found_until_its_handover_ends(
    st: Any, reopen: Any
) -> None:
    # The gateway's way (no commit of its own for the handover): the key goes with the save,
    # and an ended handover is gone at once for this store object and, once written, for others.
    saved = st.save_message(new_message(retry_key=KEY))
    found = st.find_handover(KEY, 3600)
    assert found is not None and found.message_id == saved.id and found.tokens == saved.tokens
    st.end_handover(saved.id)
    assert st.find_handover(KEY, 3600) is None
    st.save_message(new_message())  # the next save carries the end along (SQLite)
    assert reopen().find_handover(KEY, 3600) is None


def test_a_retry_finds_the_attachments_kept_for_its_direct_copies(st: Any, reopen: Any) -> None:
    # The gateway keeps each large attachment of a direct copy under a key of its own; a retry
    # finds them with their tokens (a copy of the first try may carry the link), until the
    # handover ends. The attachments themselves stay: the copies that went carry their links.
    saved = st.save_message(new_message(retry_key=KEY))
    kept = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"%PDF" * 100, "k/1")
    other = st.save_attachment(saved.id, "x.bin", "application/octet-stream", b"x" * 99)
    found = reopen().find_handover(KEY, 3600)
    assert found is not None and dict(found.attachments) == {"k/1": kept}  # id and token
    assert kept.token not in repr(found)
    again = st.find_attachment_by_token(found.attachments["k/1"].token)
    assert again is not None and again.id == kept.id and again.filename == "scan.pdf"
    st.end_handover(saved.id)
    st.save_message(new_message())  # the next save carries the end along (SQLite)
    assert reopen().find_handover(KEY, 3600) is None
    for attachment, data in ((kept, b"%PDF" * 100), (other, b"x" * 99)):
        stream = reopen().open_attachment(attachment.id)
        assert stream is not None and stream.read() == data


def test_a_discarded_message_takes_the_attachments_kept_for_a_retry(st: Any) -> None:
    # A try that failed before any copy went out discards what it stored: a retry stores it
    # anew, once.
    saved = st.save_message(new_message(retry_key=KEY))
    kept = st.save_attachment(saved.id, "scan.pdf", "application/pdf", b"%PDF" * 100, "k/1")
    st.discard(saved.id)
    assert st.find_handover(KEY, 3600) is None
    assert st.find_attachment_by_token(kept.token) is None
    assert st.open_attachment(kept.id) is None
