"""`zivmilter run` with the thread CPU time of each end-of-message piece counted, for
bench/throughput.sh's case (c): ZIVMILTER_BENCH_PIECES=1 makes bench/zivmilter_bench.sh serve
through this instead of `python -m zivmilter`.

    ZIVMILTER_BENCH_PIECES=1 CASES=c ZIVMILTER_BENCH_CMD=$PWD/bench/zivmilter_bench.sh \\
        bench/throughput.sh 2>&1 | grep PIECES

Every 500 messages it logs one line: milliseconds of CPU per message in each piece, measured
with time.thread_time_ns around the functions named below (the thread's own CPU: waiting for a
lock or for the store's writer costs nothing here). Pieces nest: "gateway" holds "store", which
holds "seal"; "store writer" is the writer thread's (the commit's SQL, WAL and fsync calls).
The wrappers add a few microseconds per call: a small piece reads a little high.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from typing import Any

_acc: dict[str, int] = {}
_count = [0]
_lock = threading.Lock()


def _wrap(owner: Any, name: str, label: str) -> None:
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return inner(*args, **kwargs)
        finally:
            spent = time.thread_time_ns() - started
            with _lock:
                _acc[label] = _acc.get(label, 0) + spent

    setattr(owner, name, timed)


def _install() -> None:
    from zivmilter.gateway import gateway as g
    from zivmilter.mta.milter import ZivMilter
    from zivmilter.store import contents
    from zivmilter.store.sqlite.connection import SqliteBase
    from zivmilter.store.sqlite.messages import MessagesMixin

    for method in ("connect", "hello", "envfrom", "envrcpt", "header", "eoh", "body"):
        _wrap(ZivMilter, method, "milter callbacks")
    _wrap(ZivMilter, "_apply", "milter: apply the plan")
    _wrap(g.Gateway, "process", "gateway (all)")
    _wrap(g.submission, "check", "gateway: submission")
    _wrap(g, "assess", "gateway: policy (assess)")
    _wrap(g.Gateway, "_store", "gateway: store (all)")
    _wrap(MessagesMixin, "save_message", "store: save_message")
    _wrap(contents, "encrypt", "store: encrypt blob")
    _wrap(g.Gateway, "_copies", "gateway: notification")
    _wrap(g.Gateway, "_plan_for_kept", "gateway: plan")
    _wrap(SqliteBase, "_write_batch", "store writer: commit (other thread)")
    if hasattr(SqliteBase, "_index_journal"):
        _wrap(SqliteBase, "_index_journal", "store writer: indexing (other thread)")
    eom = ZivMilter.eom

    def counted(self: ZivMilter) -> int:
        started = time.thread_time_ns()
        try:
            return int(eom(self))
        finally:
            with _lock:
                _acc["milter eom (all)"] = _acc.get("milter eom (all)", 0) + (
                    time.thread_time_ns() - started
                )
                _count[0] += 1
                n = _count[0]
                if n % 500 == 0:
                    pieces = ", ".join(f"{k} {v / 1e6 / n:.3f}" for k, v in sorted(_acc.items()))
                    logging.getLogger("zivmilter.bench").warning(
                        "PIECES after %d messages, ms/msg: %s", n, pieces
                    )

    ZivMilter.eom = counted  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # this tree's zivmilter
    _install()
    from zivmilter.cli import main

    sys.exit(main(sys.argv[1:]))
