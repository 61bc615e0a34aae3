"""The core (zivmilter/core/) stays pure: it never imports I/O modules (STYLE: pure decisions)."""

from __future__ import annotations

import ast
from pathlib import Path

import zivmilter

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
    "zivmilter.mta",
    "zivmilter.store",
    "zivmilter.transport",
    "zivmilter.gateway",
    "zivmilter.delivery",
    "zivmilter.portal",
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
    core = Path(zivmilter.__file__).parent / "core"
    modules = sorted(core.glob("*.py"))
    assert len(modules) > 10, "the core's modules are not where this test looks"
    for path in modules:
        for imported in _imports(path):
            parts = imported.split(".")
            prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
            assert not prefixes & FORBIDDEN, f"zivmilter/core/{path.name} imports {imported}"


def test_the_check_sees_imports() -> None:
    # The check above must be able to fail: it finds a forbidden import in a sample.
    sample = Path(__file__).with_name("_purity_sample.py")
    sample.write_text("import ssl\nfrom dns import resolver\n")
    try:
        assert {"ssl", "dns"} <= _imports(sample)
    finally:
        sample.unlink()
