"""Store-writing commands run as root refuse the service user's store, and say how to run them;
the commands that only read run (tests/test_cli_readonly.py runs each as root on such a store).

The suite runs as root: a store folder (or key file) handed to another uid stands for the
zivmilter user's store after `install -d -o zivmilter` (README, install step 3).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import yaml

from zivmilter import cli, crypto
from zivmilter.cli import runas
from zivmilter.store import SqliteStore

OTHER = 65534  # nobody: any uid but root's


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    key = tmp_path / "store.key"
    crypto.keygen(str(key))
    path = tmp_path / "zivmilter.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "organization": {"name": "Hospital", "domains": ["hospital.example"]},
                "store": {"path": str(tmp_path / "store"), "key_file": str(key)},
            }
        )
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@needs_root
def test_root_refuses_another_users_store_and_names_the_runuser_command(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = cfg.parent / "store"
    store.mkdir(mode=0o700)
    os.chown(store, OTHER, OTHER)
    argv = ["account", "add", "alice@hospital.example", "--config", str(cfg)]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    command = err.rstrip("\n").rsplit(": ", 1)[1]
    assert shlex.split(command) == ["runuser", "-u", "nobody", "--", "zivmilter", *argv]
    assert f"{store} belongs to nobody" in err
    assert os.listdir(store) == []  # nothing was opened, nothing made as root


@needs_root
def test_before_the_store_exists_its_key_files_owner_decides(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chown(cfg.parent / "store.key", OTHER, OTHER)
    code, _, err = run(capsys, "maintenance", "--config", str(cfg))
    assert code == 2
    assert "runuser -u nobody -- zivmilter maintenance --config" in err
    assert not (cfg.parent / "store").exists()  # no root:root 0700 folder left behind


@needs_root
@pytest.mark.parametrize(
    "argv",
    [
        ["idd", "add", "partner.example"],
        ["revoke", "<m@x>"],
        ["contacts", "forget", "carol@example.com"],
        ["odd-refresh"],
        ["account", "disable", "alice@hospital.example"],
        ["keys", "remove", "0123"],
        ["rekey", "--new-key", "new.key"],
        ["probe", "partner.example"],
        ["store", "migrate"],
    ],
)
def test_every_store_command_that_writes_refuses(
    cfg: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    store = cfg.parent / "store"
    store.mkdir(mode=0o700)
    os.chown(store, OTHER, OTHER)
    code, _, err = run(capsys, *argv, "--config", str(cfg))
    assert code == 2
    assert f"runuser -u nobody -- zivmilter {shlex.join(argv)} --config" in err
    assert os.listdir(store) == []


@needs_root
@pytest.mark.parametrize("side", ["from", "to"])
def test_store_copy_refuses_when_either_store_is_another_users(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], side: str
) -> None:
    """The copy writes both stores (the new one made, the old one locked): root would leave
    root's files in either; a new store's folder does not exist yet, its key file decides."""
    other = tmp_path / "other"
    other.mkdir()
    key = other / "store.key"
    crypto.keygen(str(key))
    theirs = other / "zivmilter.yaml"
    settings = yaml.safe_load(cfg.read_text())
    settings["store"] = {"path": str(other / "store"), "key_file": str(key)}
    theirs.write_text(yaml.safe_dump(settings))
    os.chown(key, OTHER, OTHER)
    source, destination = (theirs, cfg) if side == "from" else (cfg, theirs)
    argv = ["store", "copy", "--from", str(source), "--to", str(destination)]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert f"runuser -u nobody -- zivmilter {shlex.join(argv)}" in err
    assert not (other / "store").exists() and not (cfg.parent / "store").exists()


@needs_root
def test_commands_without_the_store_still_run_as_root(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = cfg.parent / "store"
    store.mkdir(mode=0o700)
    os.chown(store, OTHER, OTHER)
    code, out, _ = run(capsys, "check-config", str(cfg))
    assert code == 0 and "ok" in out


def test_roots_own_store_works_as_before(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "account", "add", "alice@hospital.example", "--config", str(cfg))
    assert (code, err) == (0, "")
    assert "sender account added" in out
    store = SqliteStore.open(
        str(cfg.parent / "store"), crypto.load_kek(str(cfg.parent / "store.key"))
    )
    try:
        assert [a.address for a in store.accounts()] == ["alice@hospital.example"]
    finally:
        store.close()


def test_not_root_is_never_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    runas.check_store_user(str(store), str(tmp_path / "k"), ["idd", "list"], euid=1000)


@needs_root
def test_an_unknown_uid_is_named_by_number(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    os.chown(store, 48213, 48213)
    with pytest.raises(Exception, match=r"runuser -u 48213 -- zivmilter idd list"):
        runas.check_store_user(str(store), str(tmp_path / "k"), ["idd", "list"], euid=0)


@needs_root
def test_explain_as_root_runs_on_another_users_store_and_reads_its_keys_read_only(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = cfg.parent / "m.eml"
    message.write_bytes(b"From: alice@hospital.example\r\nTo: bob@partner.example\r\n\r\nx\r\n")
    data = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**data, "encryption": {"enabled": True}}))
    assert run(capsys, "store", "migrate", "--config", str(cfg))[0] == 0
    store = cfg.parent / "store"
    for path in [store, *store.rglob("*")]:
        os.chown(path, OTHER, OTHER)
    code, out, err = run(capsys, "explain", str(message), "--config", str(cfg))
    assert (code, err) == (0, "")
    assert "bob@partner.example" in out
    assert f"Keys: the organization's key store ({store})" in out  # read, not skipped
    assert {p.name for p in store.iterdir()} >= {"store.sqlite3-wal", "store.sqlite3-shm"}
    assert [p for p in [store, *store.rglob("*")] if p.stat().st_uid != OTHER] == []
