#!/usr/bin/env python3
"""How long `zivmilter run` takes to start and how much memory it holds once it serves, with and
without `encryption.pdf` (only then does it import the PDF stack: fpdf2, fontTools, Pillow,
pikepdf). Each run: a fresh store and key, facts pinned (`--facts /dev/null`: no resolver),
the milter on a unix socket; timed from the process's start until the socket accepts, then the
process's resident memory (VmRSS) read, then it is killed.

    PYTHONPATH=. .venv/bin/python bench/start.py [--runs 5] [--repo DIR ...]

`--repo` (repeatable) runs the zivmilter of another checkout too (as `PYTHONPATH=DIR`), the
checkouts taking turns run after run, so that an A/B under a shared machine's load compares
like with like. Prints per checkout and config the median seconds to listening and RSS MB.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def start(repo: Path, pdf: bool) -> tuple[float, float]:
    """(seconds until the milter listens, its RSS in MB then)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(repo)}  # and cwd: `python -m` puts it first
        key, sock = Path(tmp, "store.key"), Path(tmp, "zivmilter.sock")
        zivmilter = [sys.executable, "-m", "zivmilter"]
        subprocess.run(
            [*zivmilter, "keygen", str(key)], cwd=repo, env=env, check=True, capture_output=True
        )
        cfg = Path(tmp, "zivmilter.yaml")
        cfg.write_text(
            "organization: {domains: [hospital.example]}\n"
            f"store: {{path: {tmp}/store, key_file: {key}}}\n"
            f"milter: {{socket: 'unix:{sock}'}}\n"
            f"encryption: {{pdf: {'true' if pdf else 'false'}}}\n"
        )
        began = time.perf_counter()
        proc = subprocess.Popen(
            [*zivmilter, "run", "--config", str(cfg), "--facts", "/dev/null"],
            cwd=repo,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not accepts(sock):
                if proc.poll() is not None or time.perf_counter() - began > 120:
                    raise RuntimeError(f"{repo}: zivmilter run never listened")
                time.sleep(0.005)
            took = time.perf_counter() - began
            return took, vm_rss_mb(proc.pid)
        finally:
            proc.kill()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repo", action="append", type=Path, help="another checkout (A/B)")
    args = parser.parse_args()
    repos = [REPO, *(args.repo or [])]
    cases = [(repo, pdf) for repo in repos for pdf in (False, True)]
    seconds: dict[tuple[Path, bool], list[float]] = {case: [] for case in cases}
    rss: dict[tuple[Path, bool], list[float]] = {case: [] for case in cases}
    for _ in range(args.runs):  # the cases in turn, run after run: the load moves all alike
        for case in cases:
            took, mb = start(*case)
            seconds[case].append(took)
            rss[case].append(mb)
    for repo, pdf in cases:
        print(
            f"{repo!s:40} encryption.pdf {'on ' if pdf else 'off'}:"
            f" listening after {statistics.median(seconds[repo, pdf]):5.2f} s,"
            f" RSS {statistics.median(rss[repo, pdf]):5.1f} MB (medians of {args.runs})"
        )


if __name__ == "__main__":
    main()
