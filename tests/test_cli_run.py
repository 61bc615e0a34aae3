"""`zivmilter run` and `keygen` refuse clearly before serving anything (SPEC 10, issue 3)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.harness.cli import zivmilter

ROOT = Path(__file__).parent.parent


run = zivmilter


def config(tmp_path: Path, key: Path) -> Path:
    cfg = tmp_path / "zivmilter.yaml"
    cfg.write_text(
        "organization: {domains: [hospital.example]}\n"
        f"store: {{path: {tmp_path / 'store'}, key_file: {key}}}\n"
        "milter: {socket: 'inet:1@127.0.0.1'}\n"
    )
    return cfg


def test_keygen_writes_a_private_key_and_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "store.key"
    first = run("keygen", str(key))
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    again = run("keygen", str(key))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert key.read_bytes() == before


def test_run_refuses_a_missing_key(tmp_path: Path) -> None:
    proc = run("run", "--config", str(config(tmp_path, tmp_path / "absent.key")))
    assert proc.returncode == 2
    assert "absent.key" in proc.stderr and "Traceback" not in proc.stderr


def test_run_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    key = tmp_path / "store.key"
    assert run("keygen", str(key)).returncode == 0
    os.chmod(key, 0o644)
    proc = run("run", "--config", str(config(tmp_path, key)))
    assert proc.returncode == 2
    assert "store.key" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
