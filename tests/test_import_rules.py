"""The layer rules (pyproject's [tool.importlinter] contracts: layers, a pure core, the portal
apart, the store low, no cycles) hold; scripts/test runs the same check as `lint-imports`.

This replaces the hand-written parse of the core's imports: import-linter sees every import,
at any depth and through other modules, and the standard library as well.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from importlinter import configuration
from importlinter.application import use_cases

ROOT = Path(__file__).resolve().parent.parent

# What the `lint-imports` command does first. Not importlinter.cli.lint_imports: that one
# configures logging anew, which turns off the loggers other tests read with caplog.
configuration.configure()


def lint_imports(config: str, limit_to_contracts: tuple[str, ...] = ()) -> bool:
    return use_cases.lint_imports(
        config, limit_to_contracts=limit_to_contracts, cache_dir=None, no_logo=True
    )


def test_the_import_contracts_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(str(ROOT / "pyproject.toml"))


def test_a_wrong_import_breaks_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check must be able to fail: a core that imports ssl and the store, in a sample package.
    pkg = tmp_path / "zm_sample"
    for sub in ("core", "store"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "__init__.py").write_text("")
    (pkg / "core" / "__init__.py").write_text("import ssl\nfrom zm_sample import store\n")
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_package = zm_sample\ninclude_external_packages = True\n"
        "[importlinter:contract:pure]\nname = pure\ntype = forbidden\n"
        "source_modules = zm_sample.core\nforbidden_modules = ssl\n"
        "[importlinter:contract:layers]\nname = layers\ntype = layers\n"
        "layers =\n    zm_sample.store\n    zm_sample.core\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for contract in ("pure", "layers"):
        assert not lint_imports(str(config), limit_to_contracts=(contract,)), contract
    assert "zm_sample" not in sys.modules  # analysed, never imported
