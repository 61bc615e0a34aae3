"""The spool of a message in flight: reads back what was written, from any position, and what
it puts on disk is sealed (nothing readable, nothing alterable unseen)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zivmilter.spool import RECORD, EncryptedSpool

DATA = os.urandom(3 * RECORD + 1234)


def _unnamed_file(spool: EncryptedSpool) -> str:
    return f"/proc/self/fd/{spool._file.fileno()}"  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(st.integers(1, 2 * RECORD), min_size=1, max_size=12),
    reads=st.lists(st.tuples(st.integers(0, len(DATA)), st.integers(-1, 3 * RECORD))),
    max_size=st.sampled_from([0, 1000, RECORD, 10 * RECORD]),
)
def test_reads_give_back_what_was_written(
    writes: list[int], reads: list[tuple[int, int]], max_size: int
) -> None:
    data, at = b"", 0
    with EncryptedSpool(max_size) as spool:
        for n in writes:
            spool.write(DATA[at : at + n])
            data, at = data + DATA[at : at + n], at + n
        assert spool.rolled_over is (len(data) > max_size)
        for start, size in reads:
            spool.seek(start)
            expected = data[start:] if size < 0 else data[start : start + size]
            assert spool.read(size) == expected
        spool.seek(0)
        assert spool.read() == data


def test_on_disk_only_ciphertext_and_lines_read_as_from_a_file(tmp_path: Path) -> None:
    lines = b"".join(b"line %d of a message\r\n" % i for i in range(20_000))
    with EncryptedSpool(1024, dir=str(tmp_path)) as spool:
        spool.write(lines)
        on_disk = Path(_unnamed_file(spool)).read_bytes()
        assert b"line" not in on_disk and len(on_disk) >= len(lines) - RECORD
        spool.seek(0)
        assert list(spool) == lines.splitlines(keepends=True)
        copy = tmp_path / "copy"
        spool.seek(0)
        with copy.open("wb") as out:
            shutil.copyfileobj(spool, out)
        assert copy.read_bytes() == lines


def test_an_altered_record_is_an_error_not_other_bytes(tmp_path: Path) -> None:
    with EncryptedSpool(0, dir=str(tmp_path)) as spool:
        spool.write(DATA)
        with open(_unnamed_file(spool), "r+b") as f:
            f.seek(RECORD + 100)
            byte = f.read(1)
            f.seek(RECORD + 100)
            f.write(bytes([byte[0] ^ 1]))
        spool.seek(0)
        assert spool.read(RECORD) == DATA[:RECORD]
        with pytest.raises(OSError, match="altered"):
            spool.read(1)


def test_written_at_its_end_only() -> None:
    with EncryptedSpool(0) as spool:
        spool.write(b"abc")
        spool.seek(1)
        with pytest.raises(OSError):
            spool.write(b"x")
