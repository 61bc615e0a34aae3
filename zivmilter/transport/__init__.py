"""Transport security of recipient domains (SPEC 4, 4a, 9): probing, caching, NTA 7516, ODD lists.

Pure parts: model.py (results), grade.py (levels), dane.py (TLSA matching), nta7516.py.
I/O at the edge: resolver.py (DNS), starttls.py (SMTP+TLS), probe.py (one domain), cache.py and
odd.py (SQLite, HTTP), live.py (the milter's `Facts` side), commands.py (CLI); keyfind.py
(recipients' own keys: WKD, OPENPGPKEY, SMIMEA).
"""

from __future__ import annotations

from zivmilter.transport.live import TransportFacts
from zivmilter.transport.model import DomainResult, HostResult
from zivmilter.transport.probe import Prober

__all__ = ["DomainResult", "HostResult", "Prober", "TransportFacts"]
