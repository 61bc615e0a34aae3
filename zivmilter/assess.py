"""From a message's envelope and headers to the core's decision: the one path that the milter
and `explain` share, so that what `explain` prints is what the milter does. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import directives as directive_parser
from .config import Config
from .directives import Directives
from .facts import Facts
from .message import Headers, build_envelope
from .policy import Decision, Envelope, decide


@dataclass(frozen=True, slots=True)
class Assessment:
    envelope: Envelope
    directives: Directives
    decision: Decision


def assess(
    headers: Headers, sender: str, recipients: Iterable[str], cfg: Config, facts: Facts
) -> Assessment:
    envelope = build_envelope(sender, recipients, headers)
    found = directive_parser.parse(
        headers,
        frozenset(envelope.recipients),
        sms_enabled=cfg.policy.methods.sms,
        access_code_enabled=cfg.policy.methods.access_code,
    )
    return Assessment(envelope, found, decide(envelope, found, cfg, facts))
