"""In-memory fakes and builders for the pure core's unit tests (the only place mocks live)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from zivmilter.core import config as config_mod
from zivmilter.core.config import Config
from zivmilter.delivery.reinject import Outgoing

BASE_CONFIG: dict[str, Any] = {
    "organization": {"name": "Hospital", "domains": ["hospital.example"]}
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of plain mappings: `over` wins, nested mappings merge."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_config(
    overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None
) -> Config:
    return config_mod.from_mapping(merge(base or BASE_CONFIG, overrides or {}), "test.yaml")


def split_header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name, value.lstrip(" ")


class Collecting:
    """Stands in for the Postfix listener: keeps what would be re-injected."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    def send(self, messages: Sequence[Outgoing]) -> list[str]:
        for msg in messages:
            self.sent.append(msg)
            if msg.on_accepted is not None:
                msg.on_accepted("250 2.0.0 Ok: queued")
        return ["250 2.0.0 Ok: queued"] * len(messages)
