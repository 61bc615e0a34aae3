"""The text of a message's attachments for the content rules (issue 17, scope `attachment_text`):
PDF through pypdf, DOCX, XLSX and ODT (and ODS) through their XML, read with zipfile and
defusedxml. Pure: bytes in, text out; gateway/attachtext.py runs it in a child process that it
kills at its time bound, so a runaway file cannot hold up the milter.

Bounded in size here too: an archive whose members would unpack to more than the limit is not
read (a zip bomb), XML with entity declarations is refused (defusedxml: no billion laughs, no
external entities), a PDF is read for its first `MAX_PDF_PAGES` pages, and the text is cut at
`defaults.CONTENT_MAX_TEXT_BYTES`. Why these extractors: pypdf is pure Python and well kept
(no C parser to crash the process), and the office formats are ZIP archives of XML whose text
sits in a few known elements: reading those directly needs no converter (LibreOffice, docx2txt)
and nothing outside the standard library but defusedxml.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from zivmilter import defaults

PDF = "pdf"
DOCX = "docx"
XLSX = "xlsx"
ODF = "odf"  # ODT, ODS, ODP: the same content.xml

MAX_PDF_PAGES = 200

_BY_TYPE = {
    "application/pdf": PDF,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": DOCX,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": XLSX,
    "application/vnd.oasis.opendocument.text": ODF,
    "application/vnd.oasis.opendocument.spreadsheet": ODF,
    "application/vnd.oasis.opendocument.presentation": ODF,
}
_BY_SUFFIX = {
    ".pdf": PDF, ".docx": DOCX, ".docm": DOCX, ".xlsx": XLSX, ".xlsm": XLSX,
    ".odt": ODF, ".ods": ODF, ".odp": ODF,
}  # fmt: skip


class Unreadable(ValueError):
    """An attachment whose text cannot be read: the reason is for the log (never its text)."""


def kind_of(filename: str | None, content_type: str) -> str | None:
    """Which extractor reads an attachment: by its content type, else by its name's suffix
    (mail programs often send application/octet-stream); None when none does."""
    kind = _BY_TYPE.get(content_type.lower())
    if kind is None and filename:
        dot = filename.rfind(".")
        kind = _BY_SUFFIX.get(filename[dot:].lower()) if dot >= 0 else None
    return kind


def extract(kind: str, data: bytes, max_unpacked: int) -> str:
    """The text of one attachment of `kind`; Unreadable when it cannot be read.
    `max_unpacked`: the most bytes an archive's members may unpack to."""
    try:
        if kind == PDF:
            return _cut(_pdf(data))
        if kind in (DOCX, XLSX, ODF):
            return _cut(_office(kind, data, max_unpacked))
    except Unreadable:
        raise
    except (DefusedXmlException, ParseError) as exc:
        raise Unreadable(f"refused XML ({type(exc).__name__})") from None
    except zipfile.BadZipFile as exc:
        raise Unreadable(f"not a valid ZIP archive ({exc})") from None
    except MemoryError:
        raise Unreadable("too large to read in memory") from None
    except RecursionError:
        raise Unreadable("nested too deeply") from None
    except Exception as exc:  # a damaged file: pypdf raises many kinds of error
        raise Unreadable(f"damaged or unsupported ({type(exc).__name__})") from None
    raise Unreadable(f"no reader for {kind!r}")


def _cut(text: str) -> str:
    return text[: defaults.CONTENT_MAX_TEXT_BYTES]


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader  # imported where it is used: only this scope needs it

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            reader.decrypt("")  # many PDFs are "encrypted" with an empty user password
        except Exception:
            raise Unreadable("encrypted PDF") from None
    out: list[str] = []
    size = 0
    for n, page in enumerate(reader.pages):
        if n >= MAX_PDF_PAGES or size >= defaults.CONTENT_MAX_TEXT_BYTES:
            break
        text = page.extract_text() or ""
        out.append(text)
        size += len(text)
    return "\n".join(out)


# The XML members that hold the text, and the elements that end a line or a cell.
_MEMBERS = {
    DOCX: ("word/document.xml", "word/header", "word/footer", "word/footnotes.xml"),
    XLSX: ("xl/sharedStrings.xml", "xl/worksheets/sheet"),
    ODF: ("content.xml",),
}
_BREAKS = frozenset({"p", "br", "tab", "tc", "si", "c", "table-cell", "line-break", "h"})


def _office(kind: str, data: bytes, max_unpacked: int) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [i for i in archive.infolist() if i.filename.startswith(_MEMBERS[kind])]
        if not members:
            raise Unreadable(f"no {kind.upper()} text in the archive")
        declared = sum(i.file_size for i in members)
        if declared > max_unpacked:
            raise Unreadable(f"unpacks to {declared} bytes, more than the limit {max_unpacked}")
        texts = []
        left = max_unpacked
        for info in members:
            with archive.open(info) as member:
                xml = member.read(left + 1)  # the directory may lie about the size
            if len(xml) > left:
                raise Unreadable(f"unpacks to more than the limit {max_unpacked} bytes")
            left -= len(xml)
            texts.append("".join(_text_of(fromstring(xml, forbid_dtd=True))))
        return "\n".join(texts)


def _text_of(root: Element) -> Iterator[str]:
    """The text of an office XML document, a line or cell break after each paragraph or cell
    (so that a number in one cell does not run on into the next)."""
    for el in _walk([root]):
        local = el.tag.rpartition("}")[2]
        if el.text and local in ("t", "v", "p", "span", "h", "s", "a"):
            yield el.text
        if local in _BREAKS:
            yield "\n"
        if el.tail and local in ("span", "s", "tab", "a", "line-break"):
            yield el.tail


def _walk(stack: Iterable[Element]) -> Iterator[Element]:
    """Every element in document order, without recursion (deep XML cannot overflow)."""
    todo = list(reversed(list(stack)))
    while todo:
        el = todo.pop()
        yield el
        todo.extend(reversed(list(el)))
