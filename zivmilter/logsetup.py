"""Logging for the long-running commands: one line per event, to stderr (the journal).

Every line about a message carries the Postfix queue id and the Message-ID; lines that are not
about a message show "-" there.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(levelname)s %(name)s [%(queue_id)s %(message_id)s] %(message)s"


class _MessageContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in ("queue_id", "message_id"):
            if not hasattr(record, key):
                setattr(record, key, "-")
        return True


def setup(level: str = "info", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_MessageContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
