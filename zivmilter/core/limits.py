"""What zivmilter refuses before it decides anything: a message larger than
`milter.max_message_bytes` (the milter counts it as it arrives, mta/milter.py), and one whose
MIME parts nest deeper than `defaults.MIME_NESTING_LIMIT` (the gateway measures it first,
before anything is stored or sent). `explain` says both.

Refusals of the input, decided from the message alone: permanent (5xx), the same at every try.
They are not faults (SPEC 10 answers a fault with tempfail, so the MTA keeps the message): a
tempfail would only keep the message in the client's queue for days, then bounce it.

**Nesting.** The `email` package parses and walks a message recursively: its parser a level of
Python calls per multipart or message/* part, its generator (`as_bytes`) four. A message nested
a few hundred levels deep hit Python's recursion limit in the gateway (a direct copy's large
attachments made links: `as_bytes` gives out near 250 levels; the parts the store keeps apart),
and the milter tempfailed it at every try. Postfix refuses multipart nesting deeper than its
`mime_nesting_limit` (100) with 5.6.0 where it checks headers (header_checks, as zivmilter's
install has it), but does not count message/rfc822 levels, and Sendmail has no such limit. So
the gateway measures the depth itself before any part is read, as the `email` package would
build the tree, recursing no deeper than the limit (`mime_depth`), and refuses a message
deeper than 100 levels, as Postfix does: far below what breaks, far above what real mail nests
(a forward of a forward seldom passes ten).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from email.message import Message
from email.policy import Policy, compat32, default
from typing import BinaryIO


def too_big(limit: int) -> str:
    """The reply to a message over `milter.max_message_bytes` (RFC 3463 5.3.4: message too big
    for system), at MAIL FROM (its SIZE=) or at the end of data."""
    return f"552 5.3.4 message too big for zivmilter (over {limit} bytes, milter.max_message_bytes)"


def declared_size(params: tuple[str, ...] | list[str]) -> int | None:
    """The SIZE= a client declared at MAIL FROM (RFC 1870), among its ESMTP parameters; None
    when it gave none, or one that is no number (the MTA judges its syntax)."""
    for param in params:
        name, _, value = param.partition("=")
        value = value.strip()
        if name.strip().upper() == "SIZE" and value.isascii() and value.isdigit():
            return int(value)
    return None


def too_deep(limit: int) -> str:
    """The reply to a message whose MIME parts nest deeper than `limit` (RFC 3463 5.6.0, as
    Postfix answers for its own mime_nesting_limit)."""
    return (
        f"554 5.6.0 MIME nesting deeper than {limit} levels, refused by zivmilter (its limit,"
        " as Postfix's mime_nesting_limit)"
    )


def mime_depth(source: BinaryIO, limit: int) -> int:
    """How deep the MIME parts of the message in `source` nest, read from where it stands: the
    most multipart and message/* parts around one part (0: a single part), in the tree the
    `email` package builds of it, under compat32 and under policy.default (the larger, where
    they read a Content-Type differently). Counted up to `limit` + 1 at most: a message nested
    deeper costs no more than one at the limit, and the count recurses no deeper.

    The parser's own rules, followed line by line where they decide the tree (header blocks,
    boundary lines; email/feedparser.py), with the `email` package reading each Content-Type;
    a part's body is skipped to its next line that starts with "--" (a leaf's base64 is never
    looked at line by line)."""
    start = source.tell()
    depth, diverged = _Scan(_Lines(source), limit, _compat32_type).depth()
    if diverged and depth <= limit:
        source.seek(start)
        depth = max(depth, _Scan(_Lines(source), limit, _default_type).depth()[0])
    return depth


# ---------------------------------------------------------------------------------------------
# the scan

_BLOCK = 1024 * 1024
_EOL = re.compile(rb"\r\n|\r|\n")  # where the parser cuts lines (StringIO, newline="")
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")  # feedparser's headerRE
_BLANK = re.compile(rb"\r\n|\r|\n")  # NLCRE: a line that is only its end

# (a part's header lines, whether its parent is a multipart/digest) -> (its content type, its
# boundary when multipart, whether compat32 and policy.default read them differently)
_TypeReader = Callable[[list[bytes], bool], tuple[str, str | None, bool]]


class _TooDeep(Exception):
    pass


class _Lines:
    """A binary stream in lines as the parser cuts them (each with its end: CRLF, CR or LF),
    read a block of whole lines at a time, with lines pushed back; and a skip to the next line
    that starts with "--", which finds it in C (bytes.find) rather than line by line."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._block = b""
        self._pos = 0
        self._carry: list[bytes] = []  # the start of a line the last read did not finish
        self._back: list[bytes] = []
        self._ended = False

    def _load(self) -> bool:
        """The next block of whole lines (at the end of the stream the last may lack its line
        end); False when there is nothing more."""
        while not self._ended:
            data = self._source.read(_BLOCK)
            if not data:
                self._ended = True
                break
            # a CR at the very end may be the first half of a CRLF: its line ends in the next read
            cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
            if cut:
                self._block = b"".join([*self._carry, data[:cut]])
                self._carry = [data[cut:]] if cut < len(data) else []
                self._pos = 0
                return True
            self._carry.append(data)  # a line longer than a block: joined once it ends
        if not self._carry:
            return False
        self._block, self._carry, self._pos = b"".join(self._carry), [], 0
        return True

    def readline(self) -> bytes:
        """The next line with its end; b"" at the end of the stream."""
        if self._back:
            return self._back.pop()
        if self._pos >= len(self._block) and not self._load():
            return b""
        m = _EOL.search(self._block, self._pos)
        end = m.end() if m is not None else len(self._block)
        line = self._block[self._pos : end]
        self._pos = end
        return line

    def unreadline(self, line: bytes) -> None:
        self._back.append(line)

    def next_dash_line(self) -> bytes:
        """The next line that starts with "--" (the lines before it read and dropped); b"" at
        the end of the stream."""
        while self._back:
            line = self._back.pop()
            if line.startswith(b"--"):
                return line
        while True:
            block, pos = self._block, self._pos
            if block.startswith(b"--", pos):
                return self.readline()
            found = block.find(b"--", pos)
            while found != -1 and block[found - 1] not in b"\r\n":  # inside a line: after it
                m = _EOL.search(block, found)
                found = -1 if m is None else block.find(b"--", m.end())
            if found != -1:
                self._pos = found  # a line starts there: the byte before ends one
                return self.readline()
            self._pos = len(block)
            if not self._load():
                return b""


def _blank_end(line: bytes) -> bool:
    return _BLANK.match(line) is not None


class _Scan:
    """email/feedparser.py's FeedParser._parsegen, keeping only what shapes the tree: where a
    part's header block ends, its content type, and the lines that end a part (an enclosing
    multipart's boundary, or the blank line of a message/delivery-status block). Recursive as
    the parser is, but never deeper than the limit."""

    def __init__(self, lines: _Lines, limit: int, read_type: _TypeReader) -> None:
        self._lines = lines
        self._limit = limit
        self._read_type = read_type
        self._ends: list[Callable[[bytes], object]] = []  # the parser's eof matchers
        self._blank_ends = 0  # how many of them end at a blank line
        self._deepest = 0
        self._diverged = False

    def depth(self) -> tuple[int, bool]:
        """(the depth up to limit + 1, whether the policies read a Content-Type differently)"""
        try:
            self._entity(0, False)
        except _TooDeep:
            return self._limit + 1, self._diverged
        return self._deepest, self._diverged

    def _line(self) -> bytes:
        """The next line, or b"" at the end: of the stream, or of the current part (the line
        that ends it stays unread, for the part around it)."""
        line = self._lines.readline()
        if line and any(end(line) for end in self._ends):
            self._lines.unreadline(line)
            return b""
        return line

    def _next(self) -> bytes:
        """`_line`, skipping lines no boundary can be: a boundary line starts with "--"."""
        if self._blank_ends:  # in a delivery-status block a blank line matters too
            return self._line()
        line = self._lines.next_dash_line()
        if line and any(end(line) for end in self._ends):
            self._lines.unreadline(line)
            return b""
        return line

    def _entity(self, depth: int, in_digest: bool) -> None:
        """One part (or the message), from its header block to the end of its body."""
        if depth > self._limit:
            raise _TooDeep
        self._deepest = max(self._deepest, depth)
        fields: list[bytes] = []
        while True:
            line = self._line()
            if not line:
                break
            if not _HEADER_LINE.match(line):
                if not _BLANK.match(line):  # no blank line before the body: it is the body
                    self._lines.unreadline(line)
                break
            fields.append(line)
        ctype, boundary, diverged = self._read_type(fields, in_digest)
        self._diverged |= diverged
        if ctype == "message/delivery-status":  # blocks of header fields, one part each
            while True:
                self._ends.append(_blank_end)
                self._blank_ends += 1
                self._entity(depth + 1, False)
                self._ends.pop()
                self._blank_ends -= 1
                self._line()  # the blank line
                line = self._line()
                if not line:
                    return
                self._lines.unreadline(line)
        elif ctype.partition("/")[0] == "message":  # a message in the part
            self._entity(depth + 1, False)
        elif ctype.partition("/")[0] == "multipart" and boundary is not None:
            self._multipart(depth, boundary, ctype == "multipart/digest")
        else:  # a leaf, or a multipart without a boundary: all its body is its payload
            while self._next():
                pass

    def _multipart(self, depth: int, boundary: str, digest: bool) -> None:
        try:
            delimiter = ("--" + boundary).encode("ascii", "surrogateescape")
        except UnicodeEncodeError:  # a character no line can hold (RFC 2231 decoded it)
            match: Callable[[bytes], re.Match[bytes] | None] = lambda line: None  # noqa: E731
        else:
            match = re.compile(re.escape(delimiter) + rb"(--)?[ \t]*(?:\r\n|\r|\n)?$").match
        preamble = True
        while True:
            line = self._next()
            if not line:
                break
            found = match(line)
            if found is None:
                continue  # the preamble
            if found.group(1):  # the close delimiter: what follows is the epilogue
                while self._next():
                    pass
                return
            if preamble:
                preamble = False  # the first delimiter: read again below as the first part's
                self._lines.unreadline(line)
                continue
            while True:  # delimiters in a row make no empty parts
                line = self._line()
                if not line or match(line) is None:
                    if line:
                        self._lines.unreadline(line)
                    break
            self._ends.append(match)
            self._entity(depth + 1, digest)
            self._ends.pop()


@functools.lru_cache(maxsize=512)
def _types(field: bytes, in_digest: bool) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """(type, boundary) of a Content-Type field as compat32 and as policy.default read it: the
    gateway and the mail it writes read messages with compat32, the portal and the PDF with
    policy.default. Kept for the fields seen last: most parts have one of a few."""
    compat = _read(field, in_digest, compat32)
    if _PLAIN_FIELD.fullmatch(field):
        return compat, compat  # policy.default reads a plain field alike (tests/test_limits.py)
    return compat, _read(field, in_digest, default)


# A Content-Type of RFC 2045 tokens and quoted strings alone, on one line: what nearly every part
# has, and what both policies read alike (tests/test_limits.py checks it on generated fields);
# reading it with policy.default too would cost 100 us more a part (0.1 s for 1,000 attachments).
# Not: encoded words, quoted pairs, comments, RFC 2231 (`*`, `'`, `%`), tspecials in a token.
_TOKEN = rb"[!#$&+.^_`{|}~0-9A-Za-z-]+"
_PLAIN_FIELD = re.compile(
    rb"(?![^\r\n]*=\?)[^:\r\n]*:[ \t]*"
    + _TOKEN
    + rb"/"
    + _TOKEN
    + rb"[ \t]*(?:;[ \t]*"
    + _TOKEN
    + rb"[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb'|"[^"\\\r\n]*")[ \t]*)*;?[ \t]*(?:\r\n|\r|\n)?'
)


def _read(field: bytes, in_digest: bool, policy: Policy) -> tuple[str, str | None]:
    """As the parser reads a part's Content-Type: the field's lines as the policy takes them in
    (header_source_parse, set_raw: FeedParser._parse_headers), then the `email` package's own
    get_content_type and get_boundary."""
    msg = (policy.message_factory or Message)(policy=policy)
    lines = field.decode("ascii", "surrogateescape").splitlines(keepends=True)
    msg.set_raw(*policy.header_source_parse(lines))
    if in_digest:
        msg.set_default_type("message/rfc822")
    ctype = msg.get_content_type()
    return ctype, msg.get_boundary() if ctype.partition("/")[0] == "multipart" else None


def _content_type_field(fields: list[bytes]) -> bytes:
    """The first Content-Type field of a part's header lines, as the parser finds it (folded
    lines included); b"" when there is none."""
    for i, line in enumerate(fields):
        if line[:1] in (b" ", b"\t") or line.startswith(b"From "):
            continue  # a continuation, or an envelope line: no field of its own
        colon = line.find(b":")
        if colon > 0 and line[:colon].lower() == b"content-type":
            end = i + 1
            while end < len(fields) and fields[end][:1] in (b" ", b"\t"):
                end += 1
            return b"".join(fields[i:end])
    return b""


def _defaults(in_digest: bool) -> tuple[str, str | None, bool]:
    return ("message/rfc822" if in_digest else "text/plain"), None, False


def _compat32_type(fields: list[bytes], in_digest: bool) -> tuple[str, str | None, bool]:
    field = _content_type_field(fields)
    if not field:
        return _defaults(in_digest)
    compat, other = _types(field, in_digest)
    return compat[0], compat[1], compat != other


def _default_type(fields: list[bytes], in_digest: bool) -> tuple[str, str | None, bool]:
    field = _content_type_field(fields)
    if not field:
        return _defaults(in_digest)
    other = _types(field, in_digest)[1]
    return other[0], other[1], False
