"""A milter that changes nothing, for bench/throughput.sh: what the milter round trips alone cost.

By default it carries the TCP fix of POSTFIX-NOTES ("the 40 ms trap"): TCP_NODELAY on the
listening socket and an answered `data` callback, registered exactly as zivmilter registers
(zivmilter.milter.listen). --stock runs pymilter's callbacks as shipped, for contrast.

    python bench/noop_milter.py inet:9901@127.0.0.1 [--stock]
"""

from __future__ import annotations

import argparse
import os
import sys

import Milter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from zivmilter.milter import listen


class TunedNoop(Milter.Base):  # type: ignore[misc]
    # Not @nocallback: Postfix then waits for this reply after the DATA macros, instead of
    # stalling at end-of-message behind Nagle and the milter's delayed ACK.
    def data(self) -> int:
        return int(Milter.CONTINUE)

    def eom(self) -> int:
        return int(Milter.ACCEPT)


class StockNoop(Milter.Base):  # type: ignore[misc]
    def eom(self) -> int:
        return int(Milter.ACCEPT)


def serve(spec: str, *, stock: bool) -> None:
    import milter  # pymilter's C module

    Milter.factory = StockNoop if stock else TunedNoop
    listen("noop", spec, 60, tcp_nodelay=not stock)  # the same registration as zivmilter's
    milter.main()


def main() -> None:
    parser = argparse.ArgumentParser(description="a no-op milter for bench/throughput.sh")
    parser.add_argument("socket", help="libmilter socket, e.g. inet:9901@127.0.0.1")
    parser.add_argument("--stock", action="store_true", help="without the TCP fix")
    args = parser.parse_args()
    serve(args.socket, stock=args.stock)


if __name__ == "__main__":
    main()
