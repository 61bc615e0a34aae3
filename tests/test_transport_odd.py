"""ODD list bodies (SPEC 9): whole domains only, comments, IDNs; refresh with an injected fetch."""

from __future__ import annotations

from pathlib import Path

from zivmilter.core import config as config_mod
from zivmilter.transport.odd import listed_domains, parse_list, refresh

T0 = 1_900_000_000.0


def test_parse_list() -> None:
    domains, invalid = parse_list(
        "# header\n\nA.example\nb.example.  # comment\nxn--bcher-kva.example\nbücher.example\n"
        "*.c.example\nd.example/path\n-bad-.example\nlocalhost\n"
    )
    assert domains == {"a.example", "b.example", "xn--bcher-kva.example"}
    assert [i.number for i in invalid] == [7, 8, 9, 10]
    assert all(i.reason for i in invalid)


def test_refresh_with_injected_fetch(tmp_path: Path) -> None:
    url = "https://lists.example/odd.txt"
    cfg = config_mod.from_mapping(
        {
            "organization": {"domains": ["sender.example"]},
            "store": {"path": str(tmp_path)},
            "policy": {"outbound_direct_delivery": {"lists": [url]}},
        }
    )
    fetched: list[str] = []

    def fetch(u: str) -> bytes:
        fetched.append(u)
        return b"partner.example\n"

    (report,) = refresh(cfg, T0, fetch=fetch)
    assert report.ok and report.domains == 1 and fetched == [url]
    refresh(cfg, T0 + 3600, fetch=fetch)
    assert fetched == [url]  # not due yet
    refresh(cfg, T0 + 3600, fetch=fetch, force=True)
    assert fetched == [url, url]
    refresh(cfg, T0 + 24 * 3600, fetch=fetch)
    assert len(fetched) == 3
    assert listed_domains(cfg, T0 + 24 * 3600) == {"partner.example"}


def test_fetch_errors_are_values(tmp_path: Path) -> None:
    url = "https://lists.example/odd.txt"
    cfg = config_mod.from_mapping(
        {
            "organization": {"domains": ["sender.example"]},
            "store": {"path": str(tmp_path)},
            "policy": {"outbound_direct_delivery": {"lists": [url]}},
        }
    )

    def broken(u: str) -> bytes:
        raise OSError("connection reset")

    (report,) = refresh(cfg, T0, fetch=broken)
    assert not report.ok and report.error == "connection reset"
    (report,) = refresh(cfg, T0, fetch=lambda u: b"\xff\xfe not utf-8")
    assert not report.ok and report.error == "the list is not UTF-8 text"
