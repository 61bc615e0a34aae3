"""How much of the long property and corpus tests a run does: all of it in the whole suite
(`scripts/test`, CI), a tenth of it in the developer's quick loop (`pytest --fast`, which sets
ZIVMILTER_FAST_SUITE before any test module is imported, in each pytest-xdist worker too: every
worker draws the same sample).

The fast loop samples; it never replaces the whole run, which CI does on every change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

FAST = os.environ.get("ZIVMILTER_FAST_SUITE") == "1"


def examples(n: int) -> int:
    """Hypothesis examples for a property test: `n`, or a tenth (at least 25) in --fast."""
    return max(25, n // 10) if FAST else n


def sample(items: Sequence[T]) -> list[T]:
    """Every item, or every tenth in --fast (spread over the whole list, not its head)."""
    return list(items[::10] if FAST else items)
