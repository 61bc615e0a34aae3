"""The spooled message of a transaction: the copy that is stored and sent (without directive
headers, Bcc and route headers), and the Subject rewrite in the spool itself.

The byte work on the header block is core/header_block.py's; here only the files.
"""

from __future__ import annotations

import shutil
from typing import BinaryIO

from zivmilter.core.header_block import with_subject, without_fields
from zivmilter.core.headers import NOT_COPIED, is_directive
from zivmilter.gateway.transaction import Transaction
from zivmilter.spool import spool_file

# In memory up to this size, then a temporary file encrypted under a throw-away key (spool.py).
_SPOOL_MEMORY = 8 * 1024 * 1024


def _not_copied(name: str) -> bool:
    return not name or is_directive(name) or name.lower() in NOT_COPIED


class clean_copy:
    """The message without directive headers, Bcc and route headers, as a readable file (the
    message's own spool when it has none of them: left open)."""

    def __init__(self, tx: Transaction) -> None:
        self.tx = tx
        self.spool: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        tx = self.tx
        tx.message.seek(0)
        head = without_fields(tx.message.read(tx.body_offset), _not_copied)
        if head is None:  # nothing to strip: the message itself, read from its start
            tx.message.seek(0)
            return tx.message
        spool = spool_file(_SPOOL_MEMORY)
        spool.write(head)
        shutil.copyfileobj(tx.message, spool)
        spool.seek(0)
        self.spool = spool
        return spool

    def __exit__(self, *exc: object) -> None:
        if self.spool is not None:
            self.spool.close()


def set_subject(tx: Transaction, value: str) -> None:
    """Rewrite the first Subject field of the spooled message, so that the stored copy, the
    notifications and the direct copies all carry the subject without its trigger word.
    `tx.headers` stays as the MTA holds them: header edits refer to those."""
    tx.message.seek(0)
    new_head = with_subject(tx.message.read(tx.body_offset), value)
    spool = spool_file(_SPOOL_MEMORY)  # replaces tx.message
    spool.write(new_head)
    shutil.copyfileobj(tx.message, spool)
    tx.message.close()
    tx.message = spool
    tx.body_offset = len(new_head)
