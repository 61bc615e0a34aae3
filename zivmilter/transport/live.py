"""The milter's live transport facts: cached probe results answered in microseconds.

`TransportFacts` answers `transport`, `nta7516` and `odd_listed` of the `Facts` protocol
(facts.py) from memory, backed by the SQLite cache (cache.py) and ODD lists (odd.py). A miss
schedules a background probe (probe.py) and waits at most `defaults.FACTS_WAIT` before answering
level `none`: the safe side, which leads to a notification, never to an unprotected delivery. A
refresher thread re-probes domains in use before their entries expire. Thread-safe.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from zivmilter import defaults, metrics
from zivmilter.core.addresses import normalize_domain
from zivmilter.core.config import Config
from zivmilter.core.facts import NtaFact, TransportFact
from zivmilter.core.levels import Level
from zivmilter.errors import StoreError
from zivmilter.transport import grade, nta7516
from zivmilter.transport.cache import TransportCache, db_path, ttl_for
from zivmilter.transport.model import DomainResult
from zivmilter.transport.odd import OddLists
from zivmilter.transport.probe import Prober

log = logging.getLogger("zivmilter.transport")

Clock = Callable[[], float]
ProbeFn = Callable[[str], DomainResult]

_PENDING = TransportFact(
    Level.NONE, None, "not probed yet (probe running; level none until it answers)"
)
_PENDING_NTA = NtaFact(False, "not probed yet (probe running)")
_BAD_NAME_NTA = NtaFact(False, "not a domain name")


@dataclass(frozen=True)
class _Entry:
    fact: TransportFact
    nta: nta7516.NtaRecord | str
    checked_at: float
    expires_at: float
    ntamx: TransportFact | None = None  # what the record's ntamx hosts meet, when probed

    @property
    def ntamx_unprobed(self) -> bool:
        """A cache row written before ntamx hosts were probed, for a record that names some."""
        return isinstance(self.nta, nta7516.NtaRecord) and bool(self.nta.mx) and not self.ntamx

    @property
    def refresh_at(self) -> float:
        # Long-lived entries refresh an hour ahead; short (failure) ones a quarter of their life
        # ahead, so that a failing domain is not re-probed on every pass.
        lead = min(defaults.CACHE_REFRESH_BEFORE, (self.expires_at - self.checked_at) / 4)
        return self.expires_at - lead


def _entry(result: DomainResult, expires_at: float) -> _Entry:
    fact = TransportFact(result.level, result.tls_version, result.reason)
    return _Entry(
        fact,
        nta7516.interpret(result.nta),
        result.checked_at,
        expires_at,
        grade.grade_ntamx(result.ntamx),
    )


class TransportFacts:
    """`transport(domain)`, `nta7516(domain)`, `odd_listed(domain)` for the policy core."""

    def __init__(
        self,
        config: Config,
        *,
        prober: ProbeFn | None = None,
        clock: Clock = time.time,
        wait: float = defaults.FACTS_WAIT,
        workers: int = defaults.PROBE_WORKERS,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wait = wait
        self._probe = prober or Prober(config.transport, clock=clock)
        self._cache = TransportCache(db_path(config))
        self._odd = OddLists(config, clock)
        self._entries: dict[str, _Entry] = {}
        self._used: dict[str, float] = {}
        self._inflight: dict[str, concurrent.futures.Future[_Entry | None]] = {}
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="zivmilter-probe"
        )
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        now = clock()
        for cached in self._cache.fresh(now):
            self._entries[cached.result.domain] = _entry(cached.result, cached.expires_at)
        self._odd.reload()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> TransportFacts:
        """Start the refresher thread (the milter does; tests drive `refresh_pass` by hand)."""
        if self._refresher is None:
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="zivmilter-refresher", daemon=True
            )
            self._refresher.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
        # Running probes end within their budget; their late writes fail quietly (logged).
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cache.close()

    def __enter__(self) -> TransportFacts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the Facts protocol -------------------------------------------------------------------

    def transport(self, domain: str) -> TransportFact:
        entry = self._lookup(domain)
        if entry is None:
            return _PENDING if _valid(domain) else TransportFact(reason="not a domain name")
        metrics.answer_age(self.clock() - entry.checked_at)
        return entry.fact

    def nta7516(self, domain: str) -> NtaFact:
        # The domain's own record; the configuration's lists go on top in facts.ConfiguredFacts.
        name = _normalized(domain)
        if name is None:
            return _BAD_NAME_NTA
        entry = self._lookup(name)
        if entry is None:
            return _PENDING_NTA
        if entry.ntamx_unprobed:
            # Until the ntamx hosts are probed, rule 2 does not apply (NtaFact.mx_transport
            # stays None): the safe side. The probe runs in the background.
            self.schedule(name)
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        return nta7516.judge(entry.nta, today, entry.ntamx)

    def odd_listed(self, domain: str) -> bool:
        if self._odd.is_listed(domain):
            return True
        name = _normalized(domain)
        return name is not None and name != domain and self._odd.is_listed(name)

    # --- cache and probes -----------------------------------------------------------------------

    def _lookup(self, domain: str) -> _Entry | None:
        now = self.clock()
        entry = self._entries.get(domain)
        if entry is not None and entry.expires_at > now:
            self._used[domain] = now  # a plain dict store: atomic under the GIL
            return entry
        name = _normalized(domain)
        if name is None:
            return None
        if name != domain:
            entry = self._entries.get(name)
            if entry is not None and entry.expires_at > now:
                self._used[name] = now
                return entry
        self._used[name] = now
        entry = self._from_db(name, now)
        if entry is not None:
            return entry
        future = self.schedule(name)
        try:
            return future.result(timeout=self.wait)
        except concurrent.futures.TimeoutError:
            return None

    def _from_db(self, domain: str, now: float) -> _Entry | None:
        """Another process (`zivmilter probe`, an earlier run) may have probed it."""
        try:
            cached = self._cache.get(domain)
        except StoreError as exc:
            log.warning("%s", exc)
            return None
        if cached is None or cached.expires_at <= now:
            return None
        entry = _entry(cached.result, cached.expires_at)
        with self._lock:
            self._entries[domain] = entry
        return entry

    def schedule(self, domain: str) -> concurrent.futures.Future[_Entry | None]:
        """Probe `domain` in the background unless a probe of it is already running."""
        with self._lock:
            future = self._inflight.get(domain)
            if future is None:
                future = self._pool.submit(self._run_probe, domain)
                self._inflight[domain] = future
            return future

    def _run_probe(self, domain: str) -> _Entry | None:
        try:
            result = self._probe(domain)
            expires_at = result.checked_at + ttl_for(result, self.config.transport)
            entry = _entry(result, expires_at)
            with self._lock:
                self._entries[domain] = entry
            try:
                self._cache.put(result, expires_at)
            except StoreError as exc:  # the answer in memory still holds
                log.warning("%s", exc)
            log.info("probed %s: %s (%s)", domain, result.level.value, result.reason)
            metrics.probe(result.level.value)
            return entry
        except Exception:  # a prober fault must not kill the worker; level stays none
            log.exception("probe of %s failed", domain)
            return None
        finally:
            with self._lock:
                self._inflight.pop(domain, None)

    def refresh_pass(self) -> list[str]:
        """One pass of the refresher: re-probe entries in use that are about to expire."""
        now = self.clock()
        in_use_since = now - defaults.CACHE_IN_USE_SECONDS
        due = [
            domain
            for domain, entry in list(self._entries.items())
            if now >= entry.refresh_at and self._used.get(domain, 0.0) >= in_use_since
        ]
        for domain in due:
            self.schedule(domain)
        with self._lock:
            for domain, entry in list(self._entries.items()):
                if entry.expires_at <= now and self._used.get(domain, 0.0) < in_use_since:
                    del self._entries[domain]
            for domain, used in list(self._used.items()):
                if used < in_use_since and domain not in self._entries:
                    del self._used[domain]
        return due

    def _refresh_loop(self) -> None:
        last_odd = self.clock()
        while not self._stop.wait(defaults.CACHE_REFRESH_INTERVAL):
            try:
                self.refresh_pass()
                if self.clock() - last_odd >= defaults.ODD_RELOAD_SECONDS:
                    self._odd.reload()
                    last_odd = self.clock()
            except Exception:  # keep refreshing whatever one pass hit
                log.exception("transport refresher pass failed")

    def reload_odd(self) -> None:
        self._odd.reload()


def _normalized(domain: str) -> str | None:
    try:
        return normalize_domain(domain)
    except ValueError:
        return None


def _valid(domain: str) -> bool:
    return _normalized(domain) is not None
