"""ODD list refresh (SPEC 9) against a real HTTP server on loopback, with a moved clock.

The server serves whatever the test puts in `pages`; time is passed to `refresh` and `OddLists`,
so 6 and 8 days of failures take milliseconds.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from zivmilter.core import config as config_mod
from zivmilter.core.config import Config
from zivmilter.transport.odd import OddLists, refresh

pytestmark = pytest.mark.integration

DAY = 24 * 3600.0
T0 = 1_900_000_000.0

LIST_A = """# partners of the organization
partner.example
Partner-Two.Example.   # trailing dot and capitals are fine
bücher.example

*.wildcard.example
not a domain
https://url.example/
someone@mailbox.example
192.0.2.1
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, tuple[int, bytes]]] = {}

    def do_GET(self) -> None:
        status, body = self.pages.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, dict[str, tuple[int, bytes]]]]:
    pages: ClassVar[dict[str, tuple[int, bytes]]] = {}
    handler = type("Handler", (_Handler,), {"pages": pages})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _config(tmp_path: Path, *urls: str) -> Config:
    return config_mod.from_mapping(
        {
            "organization": {"domains": ["sender.example"]},
            "store": {"path": str(tmp_path / "store")},
            "policy": {"outbound_direct_delivery": {"lists": list(urls)}},
        }
    )


def _listed(cfg: Config, now: float, domain: str) -> bool:
    lists = OddLists(cfg, clock=lambda: now)
    lists.reload()
    return lists.is_listed(domain)


def test_fetch_parses_and_reports_invalid_lines(web: Any, tmp_path: Path) -> None:
    base, pages = web
    pages["/a.txt"] = (200, LIST_A.encode())
    cfg = _config(tmp_path, f"{base}/a.txt")
    (report,) = refresh(cfg, T0)
    assert report.fetched and report.ok and report.error is None
    assert report.domains == 3
    assert [(i.number, i.text) for i in report.invalid] == [
        (6, "*.wildcard.example"),
        (7, "not a domain"),
        (8, "https://url.example/"),
        (9, "someone@mailbox.example"),
        (10, "192.0.2.1"),
    ]
    for domain in ("partner.example", "partner-two.example", "xn--bcher-kva.example"):
        assert _listed(cfg, T0, domain), domain
    assert not _listed(cfg, T0, "wildcard.example")
    # Fetched every 24 h: an hour later nothing is due.
    (again,) = refresh(cfg, T0 + 3600)
    assert not again.fetched and again.ok


def test_last_good_copy_serves_six_days_not_eight(web: Any, tmp_path: Path) -> None:
    base, pages = web
    url = f"{base}/a.txt"
    pages["/a.txt"] = (200, b"partner.example\n")
    cfg = _config(tmp_path, url)
    refresh(cfg, T0)
    pages["/a.txt"] = (500, b"oops")
    for day in range(1, 7):
        (report,) = refresh(cfg, T0 + day * DAY)
        assert report.fetched and report.error == "HTTP 500 Internal Server Error"
        assert report.ok and report.domains == 1
    assert _listed(cfg, T0 + 6 * DAY, "partner.example")
    # Even without another refresh, a copy older than 7 days no longer counts...
    assert not _listed(cfg, T0 + 8 * DAY, "partner.example")
    # ...and the next failing refresh drops it for good.
    (report,) = refresh(cfg, T0 + 8 * DAY)
    assert not report.ok and report.dropped and report.domains == 0
    pages["/a.txt"] = (200, b"partner.example\n")
    assert not _listed(cfg, T0 + 8 * DAY, "partner.example")
    (report,) = refresh(cfg, T0 + 8 * DAY + 60)
    assert report.ok and _listed(cfg, T0 + 8 * DAY + 60, "partner.example")


def test_unreachable_server_is_a_failure(web: Any, tmp_path: Path) -> None:
    base, pages = web
    pages["/a.txt"] = (200, b"partner.example\n")
    dead_url = "http://127.0.0.1:9/a.txt"  # the discard port: nothing listens there
    cfg = _config(tmp_path, f"{base}/a.txt", dead_url)
    good, dead = refresh(cfg, T0)
    assert good.ok and good.domains == 1
    assert not dead.ok and dead.error and dead.error.startswith("cannot fetch")
    assert _listed(cfg, T0, "partner.example")


def test_list_removed_from_config_stops_at_once(web: Any, tmp_path: Path) -> None:
    base, pages = web
    pages["/a.txt"] = (200, b"partner.example\n")
    pages["/b.txt"] = (200, b"other.example\n")
    both = _config(tmp_path, f"{base}/a.txt", f"{base}/b.txt")
    refresh(both, T0)
    assert _listed(both, T0, "partner.example") and _listed(both, T0, "other.example")
    only_b = _config(tmp_path, f"{base}/b.txt")
    # No refresh in between: the configuration alone decides which stored lists count.
    assert not _listed(only_b, T0 + 60, "partner.example")
    assert _listed(only_b, T0 + 60, "other.example")


def test_error_page_keeps_last_good_copy(web: Any, tmp_path: Path) -> None:
    base, pages = web
    pages["/a.txt"] = (200, b"partner.example\n")
    cfg = _config(tmp_path, f"{base}/a.txt")
    refresh(cfg, T0)
    pages["/a.txt"] = (200, b"<html><body>Maintenance</body></html>\n")
    (report,) = refresh(cfg, T0 + DAY)
    assert report.error and "no valid domain" in report.error and report.ok
    assert _listed(cfg, T0 + DAY, "partner.example")
    pages["/a.txt"] = (200, b"# emptied on purpose\n")
    (report,) = refresh(cfg, T0 + 2 * DAY)
    assert report.error is None and report.domains == 0
    assert not _listed(cfg, T0 + 2 * DAY, "partner.example")


def test_cli_odd_refresh(web: Any, tmp_path: Path) -> None:
    base, pages = web
    pages["/a.txt"] = (200, LIST_A.encode())
    cfg_file = tmp_path / "zivmilter.yaml"
    cfg_file.write_text(
        json.dumps(
            {
                "organization": {"domains": ["sender.example"]},
                "store": {"path": str(tmp_path / "store")},
                "policy": {
                    "outbound_direct_delivery": {"lists": [f"{base}/a.txt", f"{base}/gone.txt"]}
                },
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "zivmilter", "odd-refresh", "--config", str(cfg_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 1, done.stderr  # one list failed
    assert f"{base}/a.txt: fetched, 3 domains" in done.stdout
    assert "line 6: '*.wildcard.example' skipped" in done.stdout
    assert f"{base}/gone.txt: FAILED (HTTP 404 Not Found); no copy to use" in done.stdout
