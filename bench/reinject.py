"""Re-injection alone: batches of copies handed by SmtpReinjector to a private Postfix's
re-injection listener (built from the shipped postfix/ snippets), relayed to an smtp-sink, for a
few session counts. Tells the client's share of a fan-out (bench/throughput.sh case d) from
Postfix's. Run as root inside the sandbox:

    scripts/sandbox .venv/bin/python bench/reinject.py            # 99 copies, sessions 1 2 4 8
    COPIES=99 BATCHES=5 SESSIONS="1 4" scripts/sandbox .venv/bin/python bench/reinject.py

Prints per session count the median time of a batch and the CPU (user + system) that Postfix's
processes and this client spent per copy.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.harness.postfix import PostfixInstance
from zivmilter.delivery.reinject import Outgoing, SmtpReinjector

SINK = "127.0.0.41"


def _cpu_of(names: tuple[str, ...]) -> float:
    """CPU seconds so far of every process whose command name is one of `names`."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                head, _, rest = stat.read().rpartition(")")
        except OSError:
            continue
        if head.partition("(")[2] in names:
            total += sum(int(x) for x in rest.split()[11:15])
    return total / os.sysconf("SC_CLK_TCK")


POSTFIX = ("master", "smtpd", "cleanup", "qmgr", "smtp", "trivial-rewrite", "postlogd")


def main() -> None:
    if os.environ.get("ZIVMILTER_SANDBOX") != "1":
        sys.exit("run inside scripts/sandbox")
    copies = int(os.environ.get("COPIES", "99"))
    batches = int(os.environ.get("BATCHES", "5"))
    counts = [int(n) for n in os.environ.get("SESSIONS", "1 2 4 8").split()]
    body = b"Subject: a notification\r\n\r\n" + (b"x" * 78 + b"\r\n") * 40
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"{SINK}:25", "256"])
    try:
        with PostfixInstance(relayhost=f"[{SINK}]:25") as pf:
            for count in counts:
                client = SmtpReinjector("127.0.0.1", pf.reinject_port, 60, sessions=count)
                times = []
                cpu0, own0 = _cpu_of(POSTFIX), time.process_time()
                for b in range(batches):
                    batch = [
                        Outgoing("a@sender.test", [f"r{b}.{i}@bench.test"], body, f"copy {i}")
                        for i in range(copies)
                    ]
                    t0 = time.monotonic()
                    client.send(batch)
                    times.append(time.monotonic() - t0)
                postfix_ms = (_cpu_of(POSTFIX) - cpu0) * 1000 / (copies * batches)
                own_ms = (time.process_time() - own0) * 1000 / (copies * batches)
                print(
                    f"sessions {count}: {copies} copies in {statistics.median(times):.3f} s"
                    f" (median of {batches}, min {min(times):.3f}), CPU per copy: Postfix"
                    f" {postfix_ms:.2f} ms (delivery to the sink included), client {own_ms:.2f} ms",
                    flush=True,
                )
    finally:
        sink.kill()
        sink.wait()


if __name__ == "__main__":
    main()
