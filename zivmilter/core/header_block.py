"""A message's header block as raw bytes: split into whole fields, fields dropped or replaced,
values unfolded for comparison.

Pure. message.py reads header values through the `email` package; this module works on the
bytes themselves, where a field must come out exactly as it went in (the stored and direct
copies, the Subject rewrite, the header edits the gateway asks the MTA for).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FIELD_START = re.compile(rb"(?m)^(?![ \t])")
_FOLDING_WHITE_SPACE = re.compile(r"(?:[ \t]|\r?\n(?=[ \t]))+")


def split_fields(head: bytes) -> list[bytes]:
    """Split a header block into whole fields (with their folded lines and line ends)."""
    return [p for p in _FIELD_START.split(head) if p]


def field_name(raw_field: bytes) -> str:
    """The name of a raw field, stripped ("" for a line without one)."""
    return raw_field.split(b":", 1)[0].decode("ascii", "replace").strip()


def _fields_part(head: bytes) -> bytes:
    """The header block without the blank line that ends it."""
    return head[:-2] if head.endswith(b"\r\n\r\n") else head


def without_fields(head: bytes, drop: Callable[[str], bool]) -> bytes | None:
    """The header block (ending in its blank line) without the fields whose name `drop` is
    true for; None when there is none of them."""
    fields = _fields_part(head)
    kept = b"".join(f for f in split_fields(fields) if not drop(field_name(f)))
    if len(kept) == len(fields):
        return None
    return kept + b"\r\n"


def with_subject(head: bytes, value: str) -> bytes:
    """The header block (ending in its blank line) with its first Subject field set to
    `value` (LF in `value`: folding); the other fields as they are."""
    out: list[bytes] = []
    done = False
    for f in split_fields(_fields_part(head)):
        if not done and f.split(b":", 1)[0].strip().lower() == b"subject":
            out.append(b"Subject: " + value.replace("\n", "\r\n").encode() + b"\r\n")
            done = True
        else:
            out.append(f)
    return b"".join(out) + b"\r\n"


def unfolded(value: str) -> str:
    """A field value unfolded, its runs of spaces and tabs one space: how folding may differ.
    (Not str.split(): a form feed or vertical tab in a value is no white space to fold.)"""
    return " ".join(_FOLDING_WHITE_SPACE.split(value.strip(" \t\r\n")))


def header_fields(head: bytes) -> list[tuple[str, str]]:
    """(name, value) pairs of a generated header block, folding kept as LF + white space."""
    fields: list[tuple[str, str]] = []
    for raw in split_fields(head + b"\r\n"):
        text = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
        if not text:
            continue
        name, _, value = text.partition(":")
        fields.append((name, value.lstrip(" ").replace("\r\n", "\n")))
    return fields
