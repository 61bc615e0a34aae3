"""The crash test (bench/chaos.py) at a small size: 60 messages of mixed kinds through a private
Postfix while the milter is killed -9 and the re-injection listener goes away, every 1-4 s.

Nothing may be lost, reach a notification recipient unprotected, or carry a link that leads
nowhere. Duplicates: 0 at this size. With a retry recognized, a duplicate needs a fault in the
few milliseconds between a copy's final "." and the record of its 250 (or between the milter's
answer and Postfix's), and at 60 messages (about 12 faults) that has not been seen; the
2,000-message run by hand measures the rate (target <= 0.1 %).
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
    assert report["duplicated"] == 0, details
    assert done.returncode == 0
