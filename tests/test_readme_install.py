"""The README's install section against the shipped files, in milliseconds: the tables and units
its commands copy are every one that Postfix and systemd are told about. The whole section runs
for real in tests/integration/test_install_readme.py (a booted Debian 12)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from pathlib import Path

from tests.harness.readme import apt_packages, command_lines, install_blocks, pip_targets

REPO = Path(__file__).resolve().parents[1]


def copied(source_dir: str) -> set[str]:
    """Names of the files in `source_dir` that the README's `cp` commands take."""
    names = {p.name for p in (REPO / source_dir).iterdir()}
    taken: set[str] = set()
    for line in command_lines(install_blocks()):
        words = shlex.split(line)
        if words[0] != "cp":
            continue
        for pattern in words[1:-1]:
            folder, _, glob = pattern.rpartition("/")
            if folder == source_dir:
                taken |= set(fnmatch.filter(names, glob))
    return taken


def test_every_table_postfix_names_is_copied() -> None:
    named = set()
    for snippet in ("main.cf.zivmilter", "master.cf.zivmilter"):
        text = (REPO / "postfix" / snippet).read_text()
        named |= set(re.findall(r"regexp:/etc/postfix/([\w.-]+)", text))
    assert named == {p.name for p in (REPO / "postfix").glob("zivmilter_*header_checks")}
    assert named <= copied("postfix")


def test_every_unit_is_copied() -> None:
    units = {p.name for p in (REPO / "systemd").iterdir()}
    assert copied("systemd") == units


def test_step_2_switches_the_example_to_the_tcp_socket(tmp_path: Path) -> None:
    (line,) = [ln for ln in command_lines(install_blocks()) if ln.startswith("sed -i")]
    words = shlex.split(line)
    copy = tmp_path / "zivmilter.yaml"
    copy.write_text((REPO / "examples" / "zivmilter.yaml").read_text())
    subprocess.run([*words[:-1], str(copy)], check=True)
    assert "\n  socket: inet:10030@127.0.0.1\n" in copy.read_text()


def test_what_the_cache_fetches() -> None:
    assert {"postfix", "libmilter-dev", "gcc"} <= set(apt_packages(install_blocks()))
    assert pip_targets(install_blocks()) == [".[milter,portal]"]
