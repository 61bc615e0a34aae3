"""A milter that changes nothing, for bench/throughput.sh: what the milter round trips alone cost.

By default it carries the TCP fix of POSTFIX-NOTES ("the 40 ms trap"): TCP_NODELAY on the
listening socket and an answered `data` callback. --stock runs pymilter as shipped, for contrast.

    python bench/noop_milter.py inet:9901@127.0.0.1 [--stock]
"""

from __future__ import annotations

import argparse
import os
import socket

import Milter


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


def nodelay_listeners() -> int:
    """TCP_NODELAY on libmilter's listening sockets; accepted sockets inherit it on Linux."""
    tuned = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with sock:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if sock.family in (socket.AF_INET, socket.AF_INET6) and listening:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tuned += 1
    return tuned


def serve(spec: str, *, stock: bool) -> None:
    import milter  # pymilter's C module: Milter.runmilter has no hook between bind and main

    Milter.factory = StockNoop if stock else TunedNoop
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    milter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    milter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    milter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    milter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    milter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    milter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    milter.set_close_callback(Milter.close_callback)
    milter.setconn(spec)
    milter.settimeout(60)
    milter.register(
        "noop",
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )
    milter.opensocket(True)
    if not stock and nodelay_listeners() == 0:
        raise SystemExit(f"noop_milter: no TCP listening socket to tune for {spec}")
    milter.main()


def main() -> None:
    parser = argparse.ArgumentParser(description="a no-op milter for bench/throughput.sh")
    parser.add_argument("socket", help="libmilter socket, e.g. inet:9901@127.0.0.1")
    parser.add_argument("--stock", action="store_true", help="without the TCP fix")
    args = parser.parse_args()
    serve(args.socket, stock=args.stock)


if __name__ == "__main__":
    main()
