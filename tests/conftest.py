"""Suite-wide rule: integration tests start real servers and only run inside scripts/sandbox.

Outside it they fail (not skip: a skipped integration test would look like a pass in CI).
Run everything with `scripts/test`; the fast unit tests alone with `pytest --fast`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.sandbox import in_sandbox
from zivmilter import crypto
from zivmilter.store import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A fresh encrypted store with a key of its own."""
    crypto.keygen(str(tmp_path / "k"))
    st = SqliteStore.open(str(tmp_path / "s"), crypto.load_kek(str(tmp_path / "k")))
    yield st
    st.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast", action="store_true", help="unit tests only: deselect @pytest.mark.integration"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    slow = [item for item in items if item.get_closest_marker("integration") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("integration") is None]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration") is not None and not in_sandbox():
        pytest.fail(
            "integration test outside the sandbox: run through scripts/test "
            "(or use pytest --fast for the unit tests alone)",
            pytrace=False,
        )
