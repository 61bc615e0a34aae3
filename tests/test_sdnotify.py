"""sdnotify.notify against a real AF_UNIX datagram socket, as systemd provides one."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from zivmilter.sdnotify import notify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.bind(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def test_sends_state_to_path_socket(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.getsockname())
    assert notify("READY=1") is True
    assert receiver.recv(4096) == b"READY=1"


def test_sends_state_to_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"zivmilter-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STATUS=serving\nREADY=1") is True
        assert sock.recv(4096) == b"STATUS=serving\nREADY=1"


def test_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_vanished_socket_is_false_not_an_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", os.fspath(tmp_path / "gone.sock"))
    assert notify("READY=1") is False
