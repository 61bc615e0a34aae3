"""Logging for the long-running commands: one line per event, to stderr (the journal).

Every line about a message carries the Postfix queue id and the Message-ID; lines that are not
about a message show "-" there. `logging.format: json` writes each line as one JSON object
(time, level, logger, queue_id, message_id, message, and the traceback as `exception`), for log
shippers that would otherwise parse the text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FORMAT = "%(levelname)s %(name)s [%(queue_id)s %(message_id)s] %(message)s"


class _MessageContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key in ("queue_id", "message_id"):
            if not hasattr(record, key):
                setattr(record, key, "-")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the same fields as the text format, each under its name."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "queue_id": getattr(record, "queue_id", "-"),
            "message_id": getattr(record, "message_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup(level: str = "info", stream: object = None, fmt: str = "text") -> None:
    """`fmt`: "text" (FORMAT) or "json" (JsonFormatter)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT))
    handler.addFilter(_MessageContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
