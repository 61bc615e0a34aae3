"""The quotas of secure replies, decided: how many (and how many bytes) one link and one recipient
address may write in an hour and in a day. Pure: the usage comes from the store
(`ReplyStore.reply_usage`), the limits from portal.reply_limits; links.py applies the answer.
"""

from __future__ import annotations

from typing import Literal

from zivmilter.core.config import ReplyLimitsConfig
from zivmilter.store.records import ReplyUsage

HOUR = 3600
DAY = 24 * HOUR

Window = Literal["hour", "day"]


def reply_refusal(
    limits: ReplyLimitsConfig, hour: ReplyUsage, day: ReplyUsage, size: int
) -> Window | None:
    """The window ("day" before "hour": its wait is the longer one to tell) whose limit one
    more reply of `size` bytes would pass; None when it may be written."""
    windows: tuple[tuple[Window, ReplyUsage, tuple[int, int, int, int]], ...] = (
        ("day", day, (limits.link_per_day, limits.link_bytes_per_day,
                      limits.recipient_per_day, limits.recipient_bytes_per_day)),
        ("hour", hour, (limits.link_per_hour, limits.link_bytes_per_hour,
                        limits.recipient_per_hour, limits.recipient_bytes_per_hour)),
    )  # fmt: skip
    for window, used, (link_count, link_bytes, rcpt_count, rcpt_bytes) in windows:
        if (
            used.link_count + 1 > link_count
            or used.link_bytes + size > link_bytes
            or used.recipient_count + 1 > rcpt_count
            or used.recipient_bytes + size > rcpt_bytes
        ):
            return window
    return None
