"""The README's install section as commands: what tests/integration/test_install_readme.py runs
and what scripts/install-test-root fetches beforehand, so neither can drift from the text.

Every fenced block with the info string `sh` under "## Installing with your Postfix" (up to the
next `## ` heading) is a list of commands run in order as root in a checkout at CHECKOUT.
`python -m tests.harness.readme fetch-lines` prints the lines that fetch software (the apt and
pip installs); `apt-packages` the Debian packages they name; `pip-targets` what pip installs.
"""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Installing with your Postfix"
# Where the README's commands expect the checkout (its step 1 says so).
CHECKOUT = "/usr/src/zivmilter"
# A fence may be indented (inside a list item); its lines lose that indent.
_BLOCK = re.compile(r"^( *)```sh\n(.*?)^\1```$", re.DOTALL | re.MULTILINE)


def install_section(text: str) -> str:
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + len(SECTION) + 2)
    return text[start : end if end >= 0 else len(text)]


def install_blocks(text: str | None = None) -> list[str]:
    """The `sh` blocks of the install section, in order."""
    section = install_section(README.read_text() if text is None else text)
    blocks = [textwrap.dedent(body) for _, body in _BLOCK.findall(section)]
    if not blocks:
        raise ValueError(f"README.md: no ```sh blocks under {SECTION!r}")
    return blocks


def command_lines(blocks: list[str]) -> list[str]:
    """Each command of the blocks on one line (backslash continuations joined, comments out)."""
    lines: list[str] = []
    pending = ""
    for block in blocks:
        for raw in block.splitlines():
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            line = (pending + raw).strip()
            pending = ""
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def fetch_lines(blocks: list[str]) -> list[str]:
    """The commands that install software: the cache must hold what they need."""
    out = []
    for line in command_lines(blocks):
        words = _words(line)
        tool = words[0] if words else ""
        if (tool in ("apt", "apt-get") or tool.endswith("/pip")) and "install" in words:
            out.append(line)
    return out


def apt_packages(blocks: list[str]) -> list[str]:
    packages: list[str] = []
    for line in fetch_lines(blocks):
        words = _words(line)
        if words[0] in ("apt", "apt-get"):
            after = words[words.index("install") + 1 :]
            packages += [w for w in after if not w.startswith("-")]
    return packages


def pip_targets(blocks: list[str]) -> list[str]:
    """What the README's pip installs name; the checkout's path becomes `.`."""
    targets: list[str] = []
    for line in fetch_lines(blocks):
        words = _words(line)
        if words[0].endswith("/pip"):
            after = words[words.index("install") + 1 :]
            targets += [w.replace(CHECKOUT, ".", 1) for w in after if not w.startswith("-")]
    return targets


def main(argv: list[str]) -> int:
    what = {"fetch-lines": fetch_lines, "apt-packages": apt_packages, "pip-targets": pip_targets}
    if len(argv) != 1 or argv[0] not in what:
        print(f"usage: python -m tests.harness.readme {{{'|'.join(what)}}}", file=sys.stderr)
        return 2
    for item in what[argv[0]](install_blocks()):
        print(item)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
