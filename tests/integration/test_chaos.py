"""The crash test (bench/chaos.py) at a small size: 60 messages of mixed kinds through a private
Postfix while the milter is killed -9 and the re-injection listener goes away, every 1-4 s.

Nothing may be lost, reach a notification recipient unprotected, or carry a link that leads
nowhere. Duplicates: at most 2 of the ~120 copies. A retry is recognized and hands over only
what is missing, but a kill that lands between a copy's final "." and the listener's 250 (the
window of RFC 1047) leaves the milter not knowing the copy was queued: the retry sends it again
(the same link), since leaving it out could lose it. That window is most of the time a copy
takes (the listener's fsync), so a fault during a busy batch can hit it; at this size (~10
faults, mostly idle) it rarely does. The 2,000-message run by hand measures the rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def test_sixty_messages_through_random_faults() -> None:
    done = subprocess.run(
        [sys.executable, str(CHAOS), "--messages", "60", "--pace", "2", "--json"],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.stdout, done.stderr.decode(errors="replace")[-3000:]
    report = json.loads(done.stdout.decode().splitlines()[-1])
    details = "\n".join(report["details"])
    kinds = ("kill-milter", "toggle-listener", "kill-reinject-smtpd")
    assert sum(report["faults"].get(k, 0) for k in kinds) >= 5, report["faults"]  # they struck
    assert report["refused"] == 0, details
    assert report["lost"] == 0, details
    assert report["unprotected"] == 0, details
    assert report["dead_links"] == 0, details
    assert report["duplicated"] <= 2, details
    assert done.returncode == 0
