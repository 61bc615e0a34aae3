"""Suite-wide rule: integration tests start real servers and only run inside scripts/sandbox.

Outside it they fail (not skip: a skipped integration test would look like a pass in CI).
Run everything with `scripts/test`; the fast unit tests alone with `pytest --fast`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.sandbox import in_sandbox
from zivmilter import crypto, defaults
from zivmilter.store import SqliteStore


@pytest.fixture(scope="session", autouse=True)
def _sqlite_from_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each new SQLite store of the session starts as a copy of one database migrated once, as
    the PostgreSQL harness does (tests/harness/postgres.py): several hundred tests open a fresh
    store, and migrating each through every schema version, with its commit's fsync, was most of
    their set-up. The template is made by the real `connect` from the migrations of this tree,
    so a migration that fails on a new database fails every store test; opening the copy runs
    the same PRAGMAs and finds the schema current. The copy is made where `connect` creates an
    empty database file: only when none exists, 0600, and whole at once (linked into place, so
    a store opened beside it at the same moment never reads half a copy)."""
    from zivmilter.store.sqlite import connection
    from zivmilter.store.sqlite.schema import DB_NAME

    folder = tmp_path_factory.mktemp("sqlite-template")
    connection.connect(str(folder)).close()  # its last close folds the WAL into the file
    template = (folder / DB_NAME).read_bytes()

    create_empty = connection._create_private

    def create_from_template(db: str) -> None:
        copy = f"{db}.template-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            create_empty(db)  # the error an admin would get (a folder not writable...)
            return
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(template)
            with contextlib.suppress(FileExistsError):
                os.link(copy, db)
        finally:
            os.unlink(copy)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(connection, "_create_private", create_from_template)
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A fresh encrypted store with a key of its own."""
    crypto.keygen(str(tmp_path / "k"))
    st = SqliteStore.open(str(tmp_path / "s"), crypto.load_kek(str(tmp_path / "k")))
    yield st
    st.close()


@pytest.fixture(autouse=True)
def cheap_hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt (access codes) and argon2 (passwords) at a test's cost: most tests hash to set a
    case up, not to test the hashing, and each hash names its own cost, so checking an answer
    works as in production. Tests of the hashing itself are marked `real_hash_cost`."""
    if request.node.get_closest_marker("real_hash_cost") is not None:
        return
    monkeypatch.setattr(defaults, "SCRYPT_N", 2**10)
    try:
        from argon2 import PasswordHasher, profiles

        from zivmilter.portal import accounts
    except ImportError:  # a slim install without the portal
        return
    monkeypatch.setattr(accounts, "_HASHER", PasswordHasher.from_parameters(profiles.CHEAPEST))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="unit tests only (deselect @pytest.mark.integration), long property and corpus "
        "tests sampled (tests/budget.py)",
    )


# Workers for the whole quick loop: each collects the suite itself (about 2 s of CPU), so more
# than a few cost more than they bring to a suite of this size.
FAST_MAX_WORKERS = 4


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """`pytest --fast` over the whole suite runs on the processors it may use (pytest-xdist, up
    to FAST_MAX_WORKERS): the unit tests spend much of their time waiting (fsync, a lock held
    by design, a subprocess), which other tests fill. An explicit `-n` (`-n 0`: one process), a
    path or a test id, `-p no:xdist`, `--collect-only` and what needs the terminal (`--pdb`,
    `--trace`, `-s`) run in this one process, as asked."""
    if not config.getoption("--fast") or hasattr(config, "workerinput"):
        return
    if config.option.collectonly or config.option.capture == "no":
        return
    if config.option.usepdb or config.option.trace:
        return
    if not config.pluginmanager.hasplugin("xdist") or config.option.numprocesses is not None:
        return
    if config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return
    workers = min(len(os.sched_getaffinity(0)), FAST_MAX_WORKERS)
    if workers > 1:
        config.option.numprocesses = workers


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fast"):
        # Read by tests/budget.py when test modules are imported, after this hook.
        os.environ["ZIVMILTER_FAST_SUITE"] = "1"


INTEGRATION = Path(__file__).parent / "integration"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`--fast` does not even import tests/integration: every test there is an integration test
    (below), and importing its 30 modules (with their assertions rewritten) only to deselect
    them was a quarter of the collection each pytest-xdist worker does. The integration tests
    elsewhere (the store suite's PostgreSQL variants) are deselected by their marker."""
    if collection_path == INTEGRATION and config.getoption("--fast"):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION) and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)  # the folder says so, whatever the module
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
