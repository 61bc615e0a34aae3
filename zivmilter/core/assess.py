"""From a message's envelope and headers to the core's decision: the one path that the milter
and `explain` share, so that what `explain` prints is what the milter does. Pure.

Selection (selection.py) comes first: a message that is not selected gets no policy decision,
only pass-through entries; the submission check (submission.py) is separate, since it needs the
client address and login, which `explain` takes from its command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from zivmilter.core import directives as directive_parser
from zivmilter.core.config import Config
from zivmilter.core.content import Part
from zivmilter.core.directives import Directives
from zivmilter.core.facts import Facts, with_config
from zivmilter.core.message import Headers, build_envelope
from zivmilter.core.policy import Decision, Delivery, Envelope, Method, RecipientDecision, decide
from zivmilter.core.selection import Selection, select


@dataclass(frozen=True, slots=True)
class Assessment:
    envelope: Envelope
    directives: Directives
    decision: Decision
    selection: Selection


def assess(
    headers: Headers,
    sender: str,
    recipients: Iterable[str],
    cfg: Config,
    facts: Facts,
    parts: Sequence[Part] = (),
    message_bytes: int = 0,
    text_bytes: int = 0,
) -> Assessment:
    """`parts`: the message's text for the content rules (bodytext.py), when they are on;
    `message_bytes`: its size as the MTA passes it (header and body, CRLF line ends), which
    `encryption.pdf_max_bytes` bounds; `text_bytes`: the text a PDF of it lays out
    (bodytext.pdf_text_bytes), which `encryption.pdf_max_text_bytes` bounds."""
    envelope = build_envelope(sender, recipients, headers)
    found = directive_parser.parse(
        headers,
        frozenset(envelope.recipients),
        sms_enabled=cfg.policy.methods.sms,
        access_code_enabled=cfg.policy.methods.access_code,
    )
    chosen = select(cfg.selection, headers, envelope.sender, parts)
    if not chosen.selected:
        return Assessment(envelope, found, pass_through(envelope, found, chosen), chosen)
    # The configuration's IDD and NTA 7516 lists count whatever the facts source (pinned, live).
    return Assessment(
        envelope,
        found,
        decide(envelope, found, cfg, with_config(facts, cfg), message_bytes, text_bytes),
        chosen,
    )


def pass_through(envelope: Envelope, found: Directives, chosen: Selection) -> Decision:
    """Every recipient gets the message as it is (but for the directive headers)."""
    reason = f"not selected: {chosen.reason}"
    entries = tuple(
        RecipientDecision(address, Method.NONE, Delivery.PASS, None, "selection", reason)
        for address in envelope.recipients
    )
    return Decision(entries, tuple(str(issue) for issue in found.issues))
