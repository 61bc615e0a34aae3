"""The commands that only read open the store read-only (`open_store(config, read_only=True)`):
they answer while the milter is inside a write transaction (opening the store for writing would
wait for that lock, then fail), where there is no store they say so instead of making one, and
root may run them on the service user's store: they leave it no file of root's (cli/runas.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.cli import zivmilter_in_process as run
from tests.harness.keys import GnuPG
from tests.store.common import new_message, write_locked
from zivmilter import cli, crypto, store
from zivmilter.core import config as config_mod
from zivmilter.store import open_store


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GnuPG]:
    with GnuPG(tmp_path_factory.mktemp("gnupg") / "home") as g:
        yield g


def _config(tmp_path: Path) -> Path:
    key = tmp_path / "store.key"
    crypto.keygen(str(key))
    cfg = tmp_path / "z.yaml"
    cfg.write_text(yaml.safe_dump({
        "organization": {"name": "Hospital", "domains": ["hospital.example"]},
        "store": {"path": str(tmp_path / "store"), "key_file": str(key)},
        "encryption": {"enabled": True},
    }))  # fmt: skip
    return cfg


def _ok(*args: str) -> str:
    got = run(*args)
    assert got.returncode == 0, (args, got.stderr)
    return got.stdout


@pytest.fixture
def filled(tmp_path: Path, gpg: GnuPG) -> tuple[Path, str, str]:
    """A store with a message, an account, an IDD domain, a contact and bob's imported key:
    (configuration, the message's store id, the key's fingerprint)."""
    cfg = _config(tmp_path)
    _ok("account", "add", "alice@hospital.example", "--config", str(cfg))
    _ok("idd", "add", "partner.example", "--config", str(cfg))
    gpg.key_of("Bob <bob@partner.example>")
    exported = tmp_path / "bob.asc"
    exported.write_bytes(gpg.run("--armor", "--export", "<bob@partner.example>"))
    fpr = _ok("keys", "import", str(exported), "--config", str(cfg)).split()[1]
    st = open_store(config_mod.load(str(cfg)))
    try:
        saved = st.save_message(new_message())
        st.remember_contact("carol@example.com", sms="+31612345678")
    finally:
        st.close()
    return cfg, saved.id, fpr


def test_explain_answers_while_the_milter_holds_the_store_s_write_lock(
    filled: tuple[Path, str, str], tmp_path: Path
) -> None:
    cfg, _, fpr = filled
    msg = tmp_path / "m.eml"
    msg.write_bytes(
        b"From: alice@hospital.example\r\nTo: bob@partner.example\r\nSubject: x\r\n\r\nhello\r\n"
    )
    with write_locked(tmp_path / "store" / store.DB_NAME):
        got = run("explain", str(msg), "--config", str(cfg), "--json")
    assert got.returncode == 0, got.stderr
    (bob,) = json.loads(got.stdout)["recipients"]
    assert (bob["delivery"], bob["method"]) == ("encrypted", "own_key")
    assert (bob["key"]["source"], bob["key"]["ident"]) == ("keystore", fpr)


# Each command that only reads, and a line of what it prints from `filled`'s store.
READERS = {
    "account list": (["account", "list"], "alice@hospital.example\tsender active"),
    "idd list": (["idd", "list"], "partner.example\tstore"),
    "keys list": (["keys", "list"], "\topenpgp\timported "),
    "keys show": (["keys", "show", "bob@partner.example"], "bob@partner.example: usable"),
    "contacts list": (["contacts", "list"], "carol@example.com"),
    "status": (["status", "{message}"], "  bob@example.net"),
    "status --keys": (["status", "--keys"], "nothing depends on a previous key"),
    "audit export": (["audit", "export", "--message", "{message}"], '"event": "stored"'),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_command_that_only_reads_answers_while_the_milter_holds_the_write_lock(
    filled: tuple[Path, str, str], tmp_path: Path, name: str
) -> None:
    cfg, message, _ = filled
    args, shows = READERS[name]
    argv = [a.format(message=message) for a in args]
    with write_locked(tmp_path / "store" / store.DB_NAME):
        got = run(*argv, "--config", str(cfg))
    assert got.returncode == 0, got.stderr
    assert shows in got.stdout


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_command_that_only_reads_makes_no_store(tmp_path: Path, name: str) -> None:
    cfg = _config(tmp_path)
    args, _ = READERS[name]
    got = run(*[a.format(message="m1") for a in args], "--config", str(cfg))
    assert got.returncode == 2
    assert got.stderr.startswith(f"zivmilter: error: {tmp_path / 'store'}: no store here (")
    assert not (tmp_path / "store").exists()


def test_doctor_s_store_check_reads_under_the_write_lock_and_makes_no_store(
    filled: tuple[Path, str, str], tmp_path: Path
) -> None:
    from zivmilter.ops.doctor import check_store

    cfg, _, _ = filled
    with write_locked(tmp_path / "store" / store.DB_NAME):
        check = check_store(config_mod.load(str(cfg)))
    assert check.ok, check
    assert check.detail == f"{tmp_path / 'store'} opens, and the key decrypts its stored keys"
    (tmp_path / "fresh").mkdir()
    fresh = check_store(config_mod.load(str(_config(tmp_path / "fresh"))))
    assert fresh.ok, fresh
    assert fresh.detail.startswith(f"{tmp_path / 'fresh' / 'store'}: no store yet")
    assert not (tmp_path / "fresh" / "store").exists()


OTHER = 65534  # nobody: the service user of tests/test_cli_runas.py


def _hand_over(tmp_path: Path) -> Path:
    """The store folder and its key, chowned as install step 3 leaves them; the folder."""
    folder = tmp_path / "store"
    os.chown(tmp_path / "store.key", OTHER, OTHER)
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, OTHER, OTHER)
    return folder


def _not_theirs(folder: Path) -> list[str]:
    return sorted(str(p) for p in [folder, *folder.rglob("*")] if p.stat().st_uid != OTHER)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("name", sorted(READERS))
def test_a_command_that_only_reads_runs_as_root_on_the_service_user_s_store(
    filled: tuple[Path, str, str], tmp_path: Path, name: str
) -> None:
    """`sudo zivmilter status ...` answers: opened read-only, the store gets no file but
    SQLite's -wal and -shm, and SQLite gives those to the database's owner, not to root."""
    cfg, message, _ = filled
    folder = _hand_over(tmp_path)
    assert not list(folder.glob(f"{store.DB_NAME}-*"))  # no writer has them: this run makes them
    args, shows = READERS[name]
    got = run(*[a.format(message=message) for a in args], "--config", str(cfg))
    assert got.returncode == 0, got.stderr
    assert shows in got.stdout
    made = {p.name for p in folder.glob(f"{store.DB_NAME}-*")}
    assert made == {f"{store.DB_NAME}-wal", f"{store.DB_NAME}-shm"}
    assert _not_theirs(folder) == []


def test_root_runs_on_another_user_s_store_only_the_commands_shown_here_to_read_only() -> None:
    """cli._READS_ONLY, the commands root may run on the service user's store, are each among
    READERS, so shown above to answer under the write lock, where opening to write would fail."""
    parser = cli.build_parser()
    shown = [parser.parse_args([*args, "--config", "z.yaml"]) for args, _ in READERS.values()]
    for command, actions in cli._READS_ONLY.items():
        for action in actions or [None]:
            ran = [ns for ns in shown if ns.command == command and cli._reads_only(ns)]
            if action is not None:
                ran = [ns for ns in ran if action in (vars(ns).get("action"),
                                                      vars(ns).get("account_command"))]  # fmt: skip
            assert ran, (command, action)
