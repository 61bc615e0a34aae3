"""The value of the X-Zivmilter-Route header: how a direct copy tells Postfix where it may go.

gateway/ writes it; postfix/zivmilter_milter_header_checks (and the re-injection table) read it
with the same strict syntax and FILTER the message to `zivmilter-<level>[:<next hop list>]`:

    direct-<level>                                  the recipient domain's own MX
    direct-<level> nexthop=[host1],[host2],...      these hosts, in order (NTA 7516 ntamx hosts)

A host is a DNS name in lower-case A-labels with at least two labels and a top-level label that
starts with a letter, always bracketed (no MX lookup), never with a port. Pure: no I/O.
"""

from __future__ import annotations

import re

from zivmilter.core.headers import ROUTE_HEADER
from zivmilter.core.levels import Level

# The same host syntax as the shipped Postfix tables (postfix/zivmilter_milter_header_checks).
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_TOP = r"[a-z](?:[-a-z0-9]*[a-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.{_TOP}")
_VALUE = re.compile(
    rf"direct-(tls|pkix|pane|dane)(?:[ \t]+nexthop=(\[{_HOST.pattern}\](?:,\[{_HOST.pattern}\])*))?"
)
# An SMTP line may hold 1000 octets; the header stays well below, dropping the last hosts
# (the least preferred) of an unusually long list rather than breaking the line.
MAX_VALUE = 900


def is_route_host(name: str) -> bool:
    """Whether `name` can be a next hop in the route header (and the Postfix tables)."""
    return _HOST.fullmatch(name) is not None


def route_value(level: Level, next_hop: tuple[str, ...] = ()) -> str:
    """`direct-<level>`, with ` nexthop=[a],[b]` when hosts are given; ValueError when a host
    does not fit the syntax (the policy never decides on such a host: nta7516.parse refuses it)."""
    if level is Level.NONE:
        raise ValueError("no direct delivery below tls")
    value = f"direct-{level.value}"
    if not next_hop:
        return value
    for host in next_hop:
        if not is_route_host(host):
            raise ValueError(f"{host!r} cannot be a next hop in {ROUTE_HEADER}")
    hosts = [f"[{next_hop[0]}]"]
    for host in next_hop[1:]:
        if len(value) + len(" nexthop=") + len(",".join([*hosts, f"[{host}]"])) > MAX_VALUE:
            break
        hosts.append(f"[{host}]")
    return f"{value} nexthop={','.join(hosts)}"


def parse_route(value: str) -> tuple[Level, tuple[str, ...]] | None:
    """The level and next hop hosts of a route value zivmilter wrote; None for anything else."""
    found = _VALUE.fullmatch(value.strip())
    if found is None:
        return None
    hosts = tuple(h.strip("[]") for h in found.group(2).split(",")) if found.group(2) else ()
    return Level(found.group(1)), hosts
