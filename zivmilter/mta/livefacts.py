"""The milter's live facts: accounts, the contact book and `zivmilter idd` domains from the
store, transport levels, NTA 7516 records and ODD lists from the prober's cache. The
configuration's IDD and NTA 7516 lists go on top in facts.ConfiguredFacts, as for pinned facts.

Every answer is local and fast; what is unknown is the safe side (no account, level `none`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from zivmilter import defaults
from zivmilter.core.config import Config
from zivmilter.core.facts import Contact, NtaFact, TransportFact
from zivmilter.core.keys import KeyLookup
from zivmilter.store import FactsStore

_UNKNOWN = TransportFact(reason="transport prober not running: level none")


class TransportSource(Protocol):
    def transport(self, domain: str) -> TransportFact: ...
    def nta7516(self, domain: str) -> NtaFact: ...
    def odd_listed(self, domain: str) -> bool: ...


class LiveFacts:
    def __init__(
        self,
        cfg: Config,
        store: FactsStore,
        transport: TransportSource | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.source = transport
        self.clock = clock
        self._idd: frozenset[str] = frozenset()
        self._idd_read = float("-inf")

    def has_account(self, address: str) -> bool:
        return self.store.has_account(address)

    def idd_enabled(self, domain: str) -> bool:
        now = self.clock()
        if now - self._idd_read > defaults.IDD_REFRESH_SECONDS:  # the admins' list, kept fresh
            self._idd = frozenset(self.store.idd_domains())
            self._idd_read = now
        return domain in self._idd

    def transport(self, domain: str) -> TransportFact:
        return self.source.transport(domain) if self.source is not None else _UNKNOWN

    def nta7516(self, domain: str) -> NtaFact:
        if self.source is None:
            return NtaFact(False, "no NTA 7516 record checked")
        return self.source.nta7516(domain)

    def contact(self, address: str) -> Contact | None:
        return self.store.contact(address)

    def odd_listed(self, domain: str) -> bool:
        return self.source.odd_listed(domain) if self.source is not None else False

    def recipient_key(self, address: str) -> KeyLookup:
        # Keys come from the key finder on top (facts.KeyedFacts) when encryption is on.
        return KeyLookup()
