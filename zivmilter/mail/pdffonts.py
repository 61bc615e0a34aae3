"""The encrypted PDF's TrueType fonts (mail/pdf.py), read once per process instead of once per
PDF: fpdf2's `add_font` parses a font's tables and builds its width and glyph maps (6,000
characters of DejaVu), and fontTools' subsetter then decompiles GSUB, GPOS and GDEF only to
drop them. Each PDF gets its own copy of the parsed font (`add_fonts`): the maps that never
change shared, everything fpdf2 changes while it lays out and writes a document new.

Thread-safe: the milter makes PDFs in several threads at once. What is shared is read only
after it is made (under a lock, once); fpdf2 subsets a font's fontTools object in place and
closes it, so each copy opens its own, from the font file's bytes held in memory.
"""

from __future__ import annotations

import copy
import io
import threading
from dataclasses import dataclass

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont

# The tables fpdf2's subsetting drops (fpdf/output.py `_add_fonts`: GDEF, GPOS, GSUB among its
# drop_tables; kern because fontTools drops it where GPOS is present): taken out once here, so
# that no PDF decompiles them. The font each PDF embeds stays the same, byte for byte.
_DROPPED = ("GDEF", "GPOS", "GSUB", "kern")


@dataclass(frozen=True)
class _Parsed:
    """One font file, parsed: never handed to a document itself, only copied (`_copy`)."""

    font: TTFFont  # its fontTools object closed: each copy opens its own from `data`
    data: bytes  # the font file without the _DROPPED tables


_LOCK = threading.Lock()
_PARSED: dict[tuple[str, str, str], _Parsed] = {}


def add_fonts(pdf: FPDF, family: str, paths: dict[str, str]) -> None:
    """`pdf.add_font(family, style, path)` for each style and path, the font parsed once per
    process. The caller checks that the files exist (FileNotFoundError naming the path)."""
    for style, path in paths.items():
        parsed = _parsed(family, style, path)
        pdf.fonts[parsed.font.fontkey] = _copy(parsed, index=len(pdf.fonts) + 1)


def _parsed(family: str, style: str, path: str) -> _Parsed:
    key = (family, style, path)
    with _LOCK:
        found = _PARSED.get(key)
        if found is None:
            found = _PARSED[key] = _parse(family, style, path)
        return found


def _parse(family: str, style: str, path: str) -> _Parsed:
    scratch = FPDF()
    scratch.add_font(family, style, path)
    (font,) = scratch.fonts.values()
    assert isinstance(font, TTFFont) and font.color_font is None  # DejaVu: outlines, no colour
    font.close()  # an open file no copy reads
    tables = TTFont(path, recalcTimestamp=False, lazy=True)
    try:
        for tag in _DROPPED:
            if tag in tables:
                del tables[tag]
        out = io.BytesIO()
        tables.save(out)
    finally:
        tables.close()
    return _Parsed(font, out.getvalue())


def _copy(parsed: _Parsed, index: int) -> TTFFont:
    """A font for one document: what fpdf2 reads only (cmap, glyph ids, names, metrics) shared
    with `parsed`, what it changes new: the widths it adds defaults to as it measures, the
    glyphs used, the missing ones, the descriptor it numbers as a PDF object, the fontTools
    object it subsets and closes (fpdf2's own TTFFont.__deepcopy__ shares the last two: fine for
    its recorder, in one thread; not for documents written at once in several)."""
    font = copy.copy(parsed.font)
    font.i = index
    font.ttfont = TTFont(io.BytesIO(parsed.data), recalcTimestamp=False, lazy=True)
    font.cw = parsed.font.cw.copy()  # a defaultdict: reading a missing character adds it
    font.desc = copy.copy(parsed.font.desc)
    font.missing_glyphs = []
    font.biggest_size_pt = 0
    font._hbfont = None
    font.subset = SubsetMap(font)
    return font


__all__ = ["add_fonts"]
