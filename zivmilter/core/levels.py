"""Transport security levels of a recipient domain (SPEC section 4).

Shared vocabulary of the policy core, the prober and the milter's routing. Pure: no I/O.
"""

from __future__ import annotations

import enum
import functools


@functools.total_ordering
class Level(enum.Enum):
    """What a recipient domain's MX hosts were found to meet; ordered by strength."""

    NONE = "none"
    TLS = "tls"
    PKIX = "pkix"
    PANE = "pane"
    DANE = "dane"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return self.rank < other.rank

    @classmethod
    def parse(cls, text: str | None) -> Level:
        """`None`/`null`/`none` mean NONE; anything unknown raises ValueError."""
        if text is None:
            return cls.NONE
        return cls(str(text).strip().lower())

    @classmethod
    def weakest(cls, levels: list[Level]) -> Level:
        """The weakest of several MX hosts decides (SPEC 4); no host at all is NONE."""
        return min(levels) if levels else cls.NONE


_RANK = {Level.NONE: 0, Level.TLS: 1, Level.PKIX: 2, Level.PANE: 3, Level.DANE: 4}

#: Levels that a direct delivery may use (a delivery never goes out below TLS).
DIRECT_LEVELS = (Level.TLS, Level.PKIX, Level.PANE, Level.DANE)


@functools.total_ordering
class TlsVersion(enum.Enum):
    """Minimum negotiated TLS protocol version (`zivver-direct-delivery: tls tls1.2`)."""

    TLS1_2 = "tls1.2"
    TLS1_3 = "tls1.3"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, TlsVersion):
            return NotImplemented
        return self.value < other.value

    @classmethod
    def parse(cls, text: str | None) -> TlsVersion | None:
        """Accepts `tls1.2`, `TLSv1.2`, `1.2` and the like; None when unknown."""
        if text is None:
            return None
        t = str(text).strip().lower().replace("tlsv", "").replace("tls", "")
        return {"1.2": cls.TLS1_2, "1.3": cls.TLS1_3}.get(t)
