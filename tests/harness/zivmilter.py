"""Runs the real `zivmilter run` as a separate process, for the end-to-end tests and benches.

It writes a config (store, key file, milter socket, re-injection port of a PostfixInstance),
creates the key with `zivmilter keygen`, starts the milter and waits until it listens.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.harness.postfix import REPO, PostfixInstance, free_port


class ZivmilterProcess:
    def __init__(
        self,
        *,
        reinject_port: int,
        replies_port: int | None = None,
        config: dict[str, Any] | None = None,
        facts: dict[str, Any] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self._own_dir = workdir is None  # a folder of our own is removed when we stop
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="zivmilter-run-"))
        self.port = free_port()
        self.socket = f"inet:{self.port}@127.0.0.1"  # libmilter's syntax (milter.socket)
        self.postfix_socket = f"inet:127.0.0.1:{self.port}"  # the same, as Postfix writes it
        self.store_path = self.dir / "store"
        self.key_file = self.dir / "store.key"
        self.log_file = self.dir / "zivmilter.log"
        cfg: dict[str, Any] = {
            "organization": {"name": "Hospital", "domains": ["hospital.example"]},
            "milter": {"socket": self.socket},
            "store": {"path": str(self.store_path), "key_file": str(self.key_file)},
            "reinject": {
                "host": "127.0.0.1",
                "port": reinject_port,
                "replies_port": replies_port or reinject_port,
            },
            "portal": {"base_url": "https://secure.hospital.example/"},
            "logging": {"level": "info"},
            # the tests send as alice@hospital.example; tests of sender accounts switch this off
            # SPF needs the test DNS: the tests of SPF switch it on with their zones
            "submission": {"any_address_of_own_domains": True, "spf": False},
        }
        for key, value in (config or {}).items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
        self.config_file = self.dir / "zivmilter.yaml"
        self.config_file.write_text(yaml.safe_dump(cfg))
        self.facts_file: Path | None = None
        if facts is not None:
            self.facts_file = self.dir / "facts.yaml"
            self.facts_file.write_text(yaml.safe_dump(facts))
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "zivmilter", "run", "--config", str(self.config_file)]
        if self.facts_file is not None:
            cmd += ["--facts", str(self.facts_file)]
        return cmd

    def start(self) -> ZivmilterProcess:
        if not self.key_file.exists():
            subprocess.run(
                [sys.executable, "-m", "zivmilter", "keygen", str(self.key_file)],
                check=True,
                cwd=REPO,
                capture_output=True,
            )
        self.proc = subprocess.Popen(
            self.command(),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=self.log_file.open("ab"),
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"zivmilter exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"zivmilter did not listen:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> ZivmilterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def attach(
    postfix: PostfixInstance, *, reinject_port: int | None = None, **kwargs: Any
) -> ZivmilterProcess:
    """A zivmilter for a (not yet started) Postfix: Postfix consults it, it re-injects there.

    Start both with `with z, postfix:` (the milter first: Postfix tempfails without it).
    """
    kwargs.setdefault("replies_port", postfix.replies_port)
    z = ZivmilterProcess(reinject_port=reinject_port or postfix.reinject_port, **kwargs)
    postfix.milter = z.postfix_socket
    return z
