"""The policy core stays pure: it never imports I/O modules (STYLE: decisions are pure data)."""

from __future__ import annotations

import ast
from pathlib import Path

import zivmilter

PURE_MODULES = (
    "policy",
    "directives",
    "levels",
    "facts",
    "assess",
    "message",
    "addresses",
    "selection",
    "submission",
)
FORBIDDEN = {
    "Milter",
    "milter",
    "dns",
    "ssl",
    "smtplib",
    "sqlite3",
    "socket",
    "http",
    "urllib",
    "asyncio",
    "starlette",
    "uvicorn",
    "httpx",
    "subprocess",
    "zivmilter.milter",
    "zivmilter.store",
    "zivmilter.transport",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the package
                module = "zivmilter." + module if module else "zivmilter"
            names.add(module)
    return names


def test_core_imports_no_io() -> None:
    root = Path(zivmilter.__file__).parent
    for name in PURE_MODULES:
        for imported in _imports(root / f"{name}.py"):
            parts = imported.split(".")
            prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
            assert not prefixes & FORBIDDEN, f"zivmilter/{name}.py imports {imported}"


def test_the_check_sees_imports() -> None:
    # The check above must be able to fail: it finds a forbidden import in a sample.
    sample = Path(__file__).with_name("_purity_sample.py")
    sample.write_text("import ssl\nfrom dns import resolver\n")
    try:
        assert {"ssl", "dns"} <= _imports(sample)
    finally:
        sample.unlink()
