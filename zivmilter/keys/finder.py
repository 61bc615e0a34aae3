"""The KeyFinder the policy's facts ask: every configured source in order, every candidate
judged, the first trusted key wins.

What is cached here, for `encryption.cache_ttl` seconds: each judgment (candidate material x
address), so that GnuPG and OpenSSL do not run per message; at most `max_entries` of them (the
least recently used go first, the expired ones at the next sweep). What a *remote* source (WKD,
OPENPGPKEY, SMIMEA) found is cached by the source itself (transport/keyfind.py's `CachedSource`:
bounded, and a failed lookup kept only briefly), not again here. The organization's key store is
read every time: a key imported or removed with `zivmilter keys` counts from the next message
on, not after the TTL.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from zivmilter.core.keys import (
    Candidate,
    CandidateSource,
    KeyLookup,
    KeySource,
    RecipientKey,
    SkippedKey,
)
from zivmilter.keys.judge import Validator

log = logging.getLogger(__name__)

JUDGMENTS_MAX = 10_000  # judgments kept (one per address and key); the least recently used go
SWEEP_SECONDS = 60.0  # expired judgments are dropped at most this often (a pass over them all)


def _now() -> datetime:
    return datetime.now(UTC)


class SourcesKeyFinder:
    """Asks `sources` (in `order`; those configured but not given are passed over) and judges
    with `validate`. Thread-safe: the milter's threads share one finder."""

    def __init__(
        self,
        sources: Mapping[KeySource, CandidateSource],
        order: Sequence[KeySource],
        validate: Validator,
        ttl: float,
        clock: Callable[[], datetime] = _now,
        monotonic: Callable[[], float] = time.monotonic,
        max_entries: int = JUDGMENTS_MAX,
    ) -> None:
        self._sources = [(s, sources[s]) for s in order if s in sources]
        self._validate = validate
        self._ttl = ttl
        self._clock = clock
        self._monotonic = monotonic
        self._max_entries = max_entries
        # (key digest, address) -> (valid until, verdict); least recently used first
        self._judged: OrderedDict[tuple[bytes, str], tuple[float, RecipientKey | SkippedKey]]
        self._judged = OrderedDict()
        self._sweep_at = monotonic() + SWEEP_SECONDS
        self._lock = threading.Lock()

    @property
    def judgments(self) -> int:
        """How many judgments are cached now (expired ones not yet swept included)."""
        with self._lock:
            return len(self._judged)

    def lookup(self, address: str) -> KeyLookup:
        key = address.strip().lower()
        now = self._clock()
        skipped: list[SkippedKey] = []
        for source, finder in self._sources:
            for candidate in self._candidates(source, finder, address):
                verdict = self._judge(candidate, address, key, now)
                if isinstance(verdict, RecipientKey):
                    return KeyLookup(verdict, tuple(skipped))
                skipped.append(verdict)
        return KeyLookup(None, tuple(skipped))

    def forget(self) -> None:
        """Drop every cached judgment."""
        with self._lock:
            self._judged.clear()

    def _candidates(
        self, source: KeySource, finder: CandidateSource, address: str
    ) -> Sequence[Candidate]:
        try:
            return tuple(finder.candidates(address))
        except Exception:  # a source must not raise; if one does, it finds nothing
            log.exception("key source %s failed for %s", source.value, address)
            return ()

    def _judge(
        self, candidate: Candidate, address: str, key: str, now: datetime
    ) -> RecipientKey | SkippedKey:
        # The provenance is part of the verdict (trusted_because): the same material found
        # by two sources is judged once per source.
        digest = hashlib.sha256(
            candidate.material + b"\0" + candidate.provenance.encode() + b"\0"
            + candidate.source.value.encode() + b"\0" + candidate.kind.value.encode()
        ).digest()  # fmt: skip
        with self._lock:
            hit = self._judged.get((digest, key))
            if hit is not None and hit[0] > self._monotonic():
                self._judged.move_to_end((digest, key))
                return hit[1]
        verdict = self._validate(candidate, address, now)
        keep = self._ttl
        if isinstance(verdict, RecipientKey) and verdict.not_after is not None:
            keep = min(keep, (verdict.not_after - now).total_seconds())  # never past its expiry
        with self._lock:
            self._remember((digest, key), verdict, keep)
        return verdict

    def _remember(
        self, entry: tuple[bytes, str], verdict: RecipientKey | SkippedKey, keep: float
    ) -> None:
        """Under the lock: one judgment in, the expired ones out (a pass over them all, once a
        minute at most), then the least recently used beyond `max_entries`."""
        moment = self._monotonic()
        self._judged[entry] = (moment + keep, verdict)
        self._judged.move_to_end(entry)
        if moment >= self._sweep_at:
            for old in [k for k, (until, _v) in self._judged.items() if until <= moment]:
                del self._judged[old]
            self._sweep_at = moment + SWEEP_SECONDS
        while len(self._judged) > self._max_entries:
            self._judged.popitem(last=False)
