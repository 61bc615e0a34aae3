"""After a key rotation, on every backend (store/peppers.py): an access code proven under a
carried pepper is hashed again under the current key, and maintenance lets go of a carried
pepper once no live hash names it, never while a message's recipient still needs it."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.store.common import CODE, Clock, new_message
from zivmilter import crypto, defaults
from zivmilter.store import NewRecipient, Store
from zivmilter.store.sealing import Sealing

GRACE = defaults.PEPPER_PRUNE_GRACE


def _rotated(
    reopen: Callable[..., Store], old: bytes, new: bytes, **message: dict[str, object]
) -> tuple[Store, list[dict[str, str]]]:
    """Messages saved under `old` (one per keyword set in `message`, each with carol's access
    code), then the rotation to `new` run to its end and `old` retired: the store under `new`
    alone, and each message's tokens."""
    st = reopen(kek=old)
    tokens = [
        st.save_message(new_message(rfc822_id=f"<m{i}@example.org>", **kw)).tokens
        for i, kw in enumerate(message.values())
    ]
    st.close()
    ring = reopen(kek=new, previous=(old,))
    while ring.rekey_batch(100):
        pass
    ring.close()
    return reopen(kek=new), tokens


def _carol_hash(st: Store, tokens: dict[str, str]) -> str:
    carol = st.find_recipient_by_token(tokens["carol@example.com"])
    assert carol is not None and carol.access_code_hash is not None
    return carol.access_code_hash


def _carol_id(st: Store, tokens: dict[str, str]) -> int:
    carol = st.find_recipient_by_token(tokens["carol@example.com"])
    assert carol is not None
    return carol.id


def test_a_code_proven_under_a_carried_pepper_is_hashed_again_under_the_current_key(
    reopen: Callable[..., Store], kek: bytes
) -> None:
    old, new = kek, os.urandom(32)
    st, (tokens,) = _rotated(reopen, old, new, first={})
    old_id, new_id = crypto.key_id(old), crypto.key_id(new)
    stored = _carol_hash(st, tokens)
    assert crypto.pepper_id(stored) == old_id  # made under the old key, matched by its pepper
    # The contact book remembers that very hash (the portal copies what was proven).
    st.remember_contact("carol@example.com", access_code_hash=stored)
    assert st.key_usage().peppers == {old_id.hex(): 2}
    rid = _carol_id(st, tokens)

    assert st.prove_access_code(rid, stored, "W" + CODE[1:]) is None  # wrong: nothing changes
    assert st.prove_access_code(rid, None, CODE) is None
    assert _carol_hash(st, tokens) == stored

    renewed = st.prove_access_code(rid, stored, CODE)
    assert renewed is not None and renewed != stored
    assert crypto.pepper_id(renewed) == new_id
    assert _carol_hash(st, tokens) == renewed  # the recipient's row holds it now
    assert st.access_code_matches(renewed, CODE)
    assert not st.access_code_matches(renewed, "W" + CODE[1:])
    # The contact book's copy too: a new message that takes carol's code from it gets the new
    # hash, which still proves the same code.
    remembered = NewRecipient(
        "carol@example.com", 1, "access_right", "notification", "A6", verification="access_code"
    )
    later = st.save_message(new_message(recipients=[remembered], rfc822_id="<m9@example.org>"))
    copied = _carol_hash(st, later.tokens)
    assert copied == renewed and st.access_code_matches(copied, CODE)
    assert st.key_usage().peppers == {old_id.hex(): 0}
    # Proven again: already under the current key, nothing to do.
    assert st.prove_access_code(rid, renewed, CODE) == renewed


def test_a_hash_changed_meanwhile_is_not_overwritten(
    reopen: Callable[..., Store], kek: bytes
) -> None:
    """The renewal is a compare-and-set on the old hash: the contact book's entry that another
    request set to another code meanwhile keeps it."""
    old, new = kek, os.urandom(32)
    st, (tokens,) = _rotated(reopen, old, new, first={})
    stored = _carol_hash(st, tokens)
    other = Sealing.from_bytes(new).hash_access_code("ANOTHER-CODE")
    st.remember_contact("carol@example.com", access_code_hash=other)
    renewed = st.prove_access_code(_carol_id(st, tokens), stored, CODE)
    assert renewed is not None and _carol_hash(st, tokens) == renewed
    remembered = NewRecipient(
        "carol@example.com", 1, "access_right", "notification", "A6", verification="access_code"
    )
    later = st.save_message(new_message(recipients=[remembered], rfc822_id="<m9@example.org>"))
    assert _carol_hash(st, later.tokens) == other  # the other code, untouched
    assert st.access_code_matches(other, "ANOTHER-CODE")


def test_maintenance_prunes_a_carried_pepper_only_once_no_live_hash_names_it(
    reopen: Callable[..., Store], kek: bytes, clock: Clock
) -> None:
    old, new = kek, os.urandom(32)
    expires = datetime.fromtimestamp(clock.t, UTC) + timedelta(days=3)
    # Three messages to carol under the old key: one that stays, one that expires, one whose
    # code carol proves (then its hash is made again under the new key).
    st, (stays, _, proven) = _rotated(
        reopen, old, new, stays={}, expiring={"expires_at": expires}, proven={}
    )
    old_id = crypto.key_id(old).hex()

    def live_one_verifies() -> None:
        assert st.access_code_matches(_carol_hash(st, stays), CODE)

    assert st.key_usage().peppers == {old_id: 3}
    assert st.prune_peppers() == []  # named: kept, not even marked
    clock.t += GRACE + 1
    assert st.prune_peppers() == []
    live_one_verifies()

    # One is proven (re-hashed), one expires (revoked by maintenance): the first still names it.
    assert st.prove_access_code(_carol_id(st, proven), _carol_hash(st, proven), CODE)
    clock.t = expires.timestamp() + 1
    assert st.purge_expired() == 1
    assert st.key_usage().peppers == {old_id: 1}
    assert st.prune_peppers() == []
    clock.t += GRACE + 1
    assert st.prune_peppers() == []
    live_one_verifies()

    # The last one proven: nothing live names the old pepper. Maintenance marks it, and a
    # later run, a grace after, prunes it; a run within the grace does not.
    assert st.prove_access_code(_carol_id(st, stays), _carol_hash(st, stays), CODE)
    assert st.key_usage().peppers == {old_id: 0}
    assert st.prune_peppers() == []
    clock.t += GRACE - 1
    assert st.prune_peppers() == []
    assert st.key_usage().peppers == {old_id: 0}
    clock.t += 1
    assert st.prune_peppers() == [old_id]
    usage = st.key_usage()
    assert usage.peppers == {}
    # The expired message's hash names a pepper that is gone: it opens nothing anyway, and
    # nothing counts as depending on another key for it.
    assert usage.depending_on_others() == 0
    assert all(not per.get("") for per in usage.counts.values()), usage.counts
    live_one_verifies()
    assert st.access_code_matches(_carol_hash(st, proven), CODE)
    assert st.prune_peppers() == []


def test_a_pepper_named_again_within_the_grace_is_kept(
    reopen: Callable[..., Store], kek: bytes, clock: Clock
) -> None:
    """Marked unused, then named again (a hash read before the mark, written after it: a
    contact book's code copied into a message being stored): the mark goes, the pepper stays."""
    old, new = kek, os.urandom(32)
    st, (tokens,) = _rotated(reopen, old, new, first={})
    stored = _carol_hash(st, tokens)
    st.revoke(st.find_messages("<m0@example.org>")[0].id, "test")
    assert st.prune_peppers() == []  # marked
    st.remember_contact("carol@example.com", access_code_hash=stored)  # the late copy
    clock.t += GRACE + 1
    assert st.prune_peppers() == []  # named: kept, and unmarked
    assert st.key_usage().peppers == {crypto.key_id(old).hex(): 1}
    assert st.access_code_matches(stored, CODE)
    st.forget_contact("carol@example.com")
    assert st.prune_peppers() == []  # marked again, from now
    clock.t += GRACE
    assert st.prune_peppers() == [crypto.key_id(old).hex()]


def test_a_hash_written_before_key_ids_keeps_every_carried_pepper(
    reopen: Callable[..., Store], kek: bytes, clock: Clock
) -> None:
    old, new = kek, os.urandom(32)
    st, _ = _rotated(reopen, old, new, first={})
    st.revoke(st.find_messages("<m0@example.org>")[0].id, "test")
    # Peppered by the old key before hashes named their key: which pepper is not said.
    legacy = crypto.hash_secret(CODE, pepper=crypto.Kek.from_bytes(old).pepper)
    st.remember_contact("carol@example.com", access_code_hash=legacy)
    usage = st.key_usage()
    assert usage.peppers == {crypto.key_id(old).hex(): 0} and usage.peppered_without_id == 1
    assert st.prune_peppers() == []
    clock.t += GRACE + 1
    assert st.prune_peppers() == []
    assert st.access_code_matches(legacy, CODE)
