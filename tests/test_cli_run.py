"""`zivmilter run` and `keygen` refuse clearly before serving anything (SPEC 10, issue 3)."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cli import zivmilter, zivmilter_in_process
from zivmilter.mta import milter

ROOT = Path(__file__).parent.parent


run = zivmilter  # `run` serves: a process of its own, which a refusal ends


def refused_run(monkeypatch: pytest.MonkeyPatch, *args: str) -> subprocess.CompletedProcess[str]:
    """`zivmilter run ARGS...` that must refuse before it serves (its key, its config): through
    `cli.main` in this process, the same exit status and output as `run` gives, without a
    Python started for it. Serving itself fails the test here, so a refusal that went missing
    is a failure, not a milter left running in the test process. What libmilter refuses (the
    socket) is tested with `run`, below."""

    def serve(*_: Any, **__: Any) -> None:
        raise AssertionError("`zivmilter run` went on to serve")

    monkeypatch.setattr(milter, "serve", serve)
    return zivmilter_in_process("run", *args)


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
    first = zivmilter_in_process("keygen", str(key))
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    again = zivmilter_in_process("keygen", str(key))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert key.read_bytes() == before


def test_run_refuses_a_missing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = refused_run(monkeypatch, "--config", str(config(tmp_path, tmp_path / "absent.key")))
    assert proc.returncode == 2
    assert "absent.key" in proc.stderr and "Traceback" not in proc.stderr


def test_run_refuses_a_key_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "store.key"
    assert zivmilter_in_process("keygen", str(key)).returncode == 0
    os.chmod(key, 0o644)
    proc = refused_run(monkeypatch, "--config", str(config(tmp_path, key)))
    assert proc.returncode == 2
    assert "store.key" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _serving(tmp_path: Path, spec: str) -> Path:
    key = tmp_path / "store.key"
    if not key.exists():
        assert zivmilter_in_process("keygen", str(key)).returncode == 0
    cfg = config(tmp_path, key)
    cfg.write_text(cfg.read_text().replace("inet:1@127.0.0.1", spec))
    return cfg


def test_a_second_run_never_takes_the_socket_of_a_running_milter(tmp_path: Path) -> None:
    path = tmp_path / "run" / "zivmilter.sock"
    cfg = _serving(tmp_path, f"unix:{path}")
    with _listening(cfg, path):
        inode = path.stat().st_ino
        second = run("run", "--config", str(cfg), "--facts", "/dev/null")
        assert second.returncode == 2
        assert "another milter is listening" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert path.stat().st_ino == inode and _accepts(path), "the running milter lost its socket"


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run("run", "--config", str(_serving(tmp_path, f"inet:{port}@127.0.0.1")))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"milter.socket inet:{port}@127.0.0.1: cannot listen" in proc.stderr
    assert "in use" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@contextlib.contextmanager
def _listening(cfg: Path, path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`zivmilter run` with `cfg`, once it accepts on the socket at `path`; killed after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zivmilter", "run", "--config", str(cfg), "--facts", "/dev/null"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _accepts(path):
            assert time.monotonic() < deadline and proc.poll() is None, "the milter never listened"
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()  # its graceful stop is not under test (libmilter notices SIGTERM in ~5 s)
        proc.wait(timeout=30)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("pdf", [False, True], ids=["no-pdf", "encryption.pdf"])
def test_the_pdf_libraries_are_loaded_only_where_pdfs_are_made(tmp_path: Path, pdf: bool) -> None:
    """Without encryption.pdf no PDF is ever made: the milter serves without fpdf2's Pillow and
    pikepdf's qpdf in its memory (~30 MB, bench/start.py). With it, they are there before it
    listens: a broken install stops the start, not the first PDF."""
    path = tmp_path / "run" / "zivmilter.sock"
    cfg = _serving(tmp_path, f"unix:{path}")
    cfg.write_text(cfg.read_text() + f"encryption: {{pdf: {str(pdf).lower()}}}\n")
    with _listening(cfg, path) as proc:
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
    assert ("/pikepdf/" in libraries) is pdf and ("/PIL/" in libraries) is pdf
