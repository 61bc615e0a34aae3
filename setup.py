"""The build's one step besides pyproject.toml: the gettext catalogs compiled.

zivmilter/locale/<language>/LC_MESSAGES/zivmilter.po are compiled to .mo files in the build
(wheel, `pip install .`, scripts/build-deb), never checked in: the .po files are the source.
A checkout used in place (an editable install, the tests) reads the .po through Babel instead
(zivmilter/i18n.py). By hand: `pybabel compile -d zivmilter/locale -D zivmilter`.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithCatalogs(build_py):
    """build_py, then each catalog compiled next to its .po in the build folder."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        for po in sorted(Path("zivmilter/locale").glob("*/LC_MESSAGES/*.po")):
            with po.open("rb") as fp:
                catalog = read_po(fp, locale=po.parts[-3], domain=po.stem)
            errors = [(m.id, e) for m, e in catalog.check() if e]
            if errors:
                raise SystemExit(f"{po}: {errors[0][0]!r}: {errors[0][1][0]}")
            mo = Path(self.build_lib) / po.with_suffix(".mo")
            mo.parent.mkdir(parents=True, exist_ok=True)
            with mo.open("wb") as out:
                write_mo(out, catalog)


setup(cmdclass={"build_py": BuildWithCatalogs})
