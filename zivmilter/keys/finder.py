"""The KeyFinder the policy's facts ask: every configured source in order, every candidate
judged, the first trusted key wins; the outcome (found or not) is kept per address for
`encryption.cache_ttl` seconds, so a busy milter does not ask WKD or DNS per message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from zivmilter.core.keys import (
    CandidateSource,
    KeyLookup,
    KeySource,
    RecipientKey,
    SkippedKey,
)
from zivmilter.keys.judge import Validator

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class SourcesKeyFinder:
    """Asks `sources` (in `order`, those configured but not given are passed over) and judges
    with `validate`. Thread-safe: the milter's threads share one finder."""

    def __init__(
        self,
        sources: Mapping[KeySource, CandidateSource],
        order: Sequence[KeySource],
        validate: Validator,
        ttl: float,
        clock: Callable[[], datetime] = _now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sources = [(s, sources[s]) for s in order if s in sources]
        self._validate = validate
        self._ttl = ttl
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, KeyLookup]] = {}
        self._lock = threading.Lock()

    def lookup(self, address: str) -> KeyLookup:
        key = address.strip().lower()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > self._monotonic():
                return hit[1]
        found = self._lookup(address)
        with self._lock:
            self._cache[key] = (self._monotonic() + self._ttl, found)
        return found

    def forget(self, address: str | None = None) -> None:
        """Drop the cached outcome for one address (or all): after an import or a removal."""
        with self._lock:
            if address is None:
                self._cache.clear()
            else:
                self._cache.pop(address.strip().lower(), None)

    def _lookup(self, address: str) -> KeyLookup:
        now = self._clock()
        skipped: list[SkippedKey] = []
        for source, finder in self._sources:
            try:
                candidates = finder.candidates(address)
            except Exception:  # a source must not raise; if one does, it finds nothing
                log.exception("key source %s failed for %s", source.value, address)
                continue
            for candidate in candidates:
                verdict = self._validate(candidate, address, now)
                if isinstance(verdict, RecipientKey):
                    return KeyLookup(verdict, tuple(skipped))
                skipped.append(verdict)
        return KeyLookup(None, tuple(skipped))
