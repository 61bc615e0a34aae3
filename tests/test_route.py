"""The route header's value (route.py) and the shipped Postfix tables that read it.

The tables are asked through `postmap -q`, i.e. Postfix's own regexp engine, with the exact
values the gateway writes and with values a client or a fault could produce.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from zivmilter.core.levels import Level
from zivmilter.core.route import MAX_VALUE, is_route_host, parse_route, route_value

POSTFIX = Path(__file__).parent.parent / "postfix"
Query = Callable[[str, str], str]  # (table file, header field) -> the action
ROUTED = ("zivmilter_milter_header_checks", "zivmilter_reinject_header_checks")


@pytest.fixture(scope="module")
def postmap(tmp_path_factory: pytest.TempPathFactory) -> Query:
    tool = shutil.which("postmap") or "/usr/sbin/postmap"
    config = tmp_path_factory.mktemp("postmap")
    (config / "main.cf").write_text("")  # postmap reads a main.cf; an empty one will do
    # Postfix waits (300 ms at a time, about 2 s) for a main.cf changed in the last moments to
    # settle; this one is written once and never changes: date it an hour back.
    hour_ago = time.time() - 3600
    os.utime(config / "main.cf", (hour_ago, hour_ago))

    def query(table: str, field: str) -> str:
        done = subprocess.run(
            [tool, "-c", str(config), "-q", field, f"regexp:{POSTFIX / table}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr  # 1: no rule matched
        return done.stdout.strip()

    return query


def test_route_values() -> None:
    assert route_value(Level.PKIX) == "direct-pkix"
    assert route_value(Level.DANE, ("mx1.nta.example", "mx2.nta.example")) == (
        "direct-dane nexthop=[mx1.nta.example],[mx2.nta.example]"
    )
    assert parse_route("direct-dane nexthop=[mx1.nta.example],[mx2.nta.example]") == (
        Level.DANE,
        ("mx1.nta.example", "mx2.nta.example"),
    )
    assert parse_route("direct-tls") == (Level.TLS, ())
    for bad in (
        "direct-none",
        "direct-pkix nexthop=",
        "direct-pkix nexthop=[127.0.0.1]",
        "direct-pkix nexthop=[a.example]:25",
        "direct-pkix nexthop=a.example",
    ):
        assert parse_route(bad) is None, bad
    with pytest.raises(ValueError):
        route_value(Level.NONE)
    with pytest.raises(ValueError, match="cannot be a next hop"):
        route_value(Level.PKIX, ("mx.example],[evil.example",))


def test_host_syntax() -> None:
    assert is_route_host("mx-1.xn--bcher-kva.example")
    for bad in (
        "localhost",
        "127.0.0.1",
        "mx.example.1x",
        "MX.example",
        "mx_1.example",
        "-mx.example",
        "mx.example:25",
        "mx.example,evil.example",
        "",
    ):
        assert not is_route_host(bad), bad


def test_a_long_list_keeps_the_most_preferred_hosts_within_the_line() -> None:
    hosts = tuple(f"{'h' * 60}{i}.nta.example" for i in range(20))
    value = route_value(Level.PKIX, hosts)
    assert len(value) <= MAX_VALUE
    parsed = parse_route(value)
    assert parsed is not None and parsed[1] == hosts[: len(parsed[1])] and len(parsed[1]) > 5


@pytest.mark.parametrize("table", ROUTED)
@pytest.mark.parametrize(
    ("level", "hosts"),
    [
        (Level.TLS, ()),
        (Level.PKIX, ("mx1.nta.example",)),
        (Level.PANE, ("mx1.nta.example", "mx-2.b.nta.example")),
        (Level.DANE, ("a.example", "b.example", "xn--bcher-kva.example")),
    ],
)
def test_tables_filter_what_the_gateway_writes(
    postmap: Query, table: str, level: Level, hosts: tuple[str, ...]
) -> None:
    field = f"X-Zivmilter-Route: {route_value(level, hosts)}"
    nexthop = ",".join(f"[{h}]" for h in hosts)
    assert postmap(table, field) == f"FILTER zivmilter-{level.value}:{nexthop}"


@pytest.mark.parametrize("table", ROUTED)
@pytest.mark.parametrize(
    "value",
    [
        "direct-pkix nexthop=[127.0.0.1]",  # an address, not a name
        "direct-pkix nexthop=[evil.example]:2525",  # a port
        "direct-pkix nexthop=evil.example",  # MX lookup of a name of someone's choice
        "direct-pkix nexthop=[a.example], [b.example]",  # a space
        "direct-pkix nexthop=[a.example] smtp:[evil.example]",  # a second transport
        "direct-pkix nexthop=[a.example];[b.example]",
        "direct-pkix nexthop=[a.example]\n\tX-Other: y",
        "direct-PKIX nexthop=[a.example]",  # would name no master.cf transport
        "direct-none nexthop=[a.example]",
        "direct-pkix nexthop=[localhost]",
        "direct-pkix nexthop=[a.example],",
        "direct-pkix nexthop=[$1.example]",
    ],
)
def test_tables_hold_anything_else(postmap: Query, table: str, value: str) -> None:
    assert postmap(table, f"X-Zivmilter-Route: {value}") == "HOLD unknown X-Zivmilter-Route value"


@pytest.mark.parametrize(
    "value", ["direct-pkix", "direct-pkix nexthop=[mx1.nta.example],[mx2.nta.example]", "x"]
)
def test_route_header_never_leaves_and_is_never_taken_from_a_client(
    postmap: Query, value: str
) -> None:
    for name in ("X-Zivmilter-Route", "x-zivmilter-route"):
        field = f"{name}: {value}"
        assert postmap("zivmilter_smtp_header_checks", field) == "IGNORE"
        assert postmap("zivmilter_header_checks", field) == (
            "STRIP client-supplied X-Zivmilter-Route removed"
        )
