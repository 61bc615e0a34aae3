"""Which messages are secured (SPEC 6): `selection.mode` all, or rules on the subject, the sender,
Microsoft sensitivity labels and directive headers. Pure: header fields in, a `Selection` out.

assess.py asks this before the policy core; a message that is not selected passes through with
only its directive headers removed (gateway/gateway.py), and `explain` prints the reason given here.

Rules (mode `rules`; any one match selects):
- a subject trigger word: whole word, case-insensitive, in the subject as decoded from RFC 2047
  encoded words (a trigger inside an encoded word counts). A trigger of several words matches
  across any run of white space;
- the envelope sender or a From address is in `selection.senders` (either one: securing too much
  is the safe side);
- an enabled label of the `msip_labels` header (Microsoft Purview sensitivity labels) whose id
  (GUID) or name is in `selection.sensitivity_labels`, compared case-insensitively;
- any directive header present (`selection.directive_headers`);
- a content rule (`selection.content`, content.py): a BSN, IBAN, card number or site pattern in
  the subject, the text parts or an attachment name. In mode `all` the content rules only report:
  `matches` lists what they found (masked), for explain and the log.

With `selection.remove_trigger`, every trigger word found is cut from the subject in either mode
(the recipient should not see the sender's marker); `new_subject` then holds the new header
value, RFC 2047-encoded where it is not ASCII, folded with LF + space as the milter passes values.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy as email_policy

from zivmilter.core.addresses import header_addresses, normalize_address
from zivmilter.core.config import SelectionConfig
from zivmilter.core.content import SUBJECT, ContentMatch, Part, scan
from zivmilter.core.headers import is_directive
from zivmilter.errors import MessageError

Headers = Sequence[tuple[str, str]]

MSIP_HEADER = "msip_labels"


@dataclass(frozen=True, slots=True)
class Selection:
    selected: bool
    reason: str
    # The Subject header's new value when a trigger word is removed; None: leave it as it is.
    new_subject: str | None = None
    # Rules that matched: "mode", "subject", "sender", "label", "directive", "content".
    matched: tuple[str, ...] = ()
    # What the content rules found, masked (in mode all too, where they only report).
    matches: tuple[ContentMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Label:
    """One label of an `msip_labels` header."""

    id: str  # GUID, lower case
    name: str | None
    enabled: bool


def select(
    cfg: SelectionConfig, headers: Headers, sender: str, parts: Sequence[Part] = ()
) -> Selection:
    """Whether the message is secured, why, and the subject without trigger words if asked.

    `parts` is the message's text for the content rules (bodytext.py); the subject is taken from
    `headers` here.
    """
    subject_raw = _first(headers, "Subject")
    subject = decode_header_value(subject_raw) if subject_raw is not None else ""
    triggers = [t for t in cfg.subject_triggers if t.strip()]
    found = [t for t in triggers if _trigger_pattern(t).search(subject)]
    new_subject = None
    if cfg.remove_trigger and found:
        new_subject = encode_subject(remove_triggers(subject, found))
    matches = _content_matches(cfg, subject, parts)

    if cfg.mode == "all":
        reason = "selection.mode is all: every message is secured"
        return Selection(True, reason, new_subject, ("mode",), matches)

    reasons: list[str] = []
    matched: list[str] = []
    if found:
        words = ", ".join(repr(t) for t in found)
        reasons.append(f"subject contains trigger word {words}")
        matched.append("subject")
    hit = _sender_match(cfg, headers, sender)
    if hit is not None:
        reasons.append(f"sender {hit} is in selection.senders")
        matched.append("sender")
    label = _label_match(cfg, headers)
    if label is not None:
        shown = f"{label.name} ({label.id})" if label.name else label.id
        reasons.append(f"sensitivity label {shown} is in selection.sensitivity_labels")
        matched.append("label")
    if cfg.directive_headers:
        names = sorted({name.strip().lower() for name, _ in headers if is_directive(name)})
        if names:
            reasons.append(f"directive header {', '.join(names)} present")
            matched.append("directive")
    if matches:
        shown = ", ".join(f"{m.rule} in {m.where} ({m.masked})" for m in matches)
        reasons.append(f"content rule matched: {shown}")
        matched.append("content")
    if reasons:
        return Selection(True, "; ".join(reasons), new_subject, tuple(matched), matches)
    return Selection(False, "no selection rule matched (selection.mode is rules)")


def _content_matches(
    cfg: SelectionConfig, subject: str, parts: Sequence[Part]
) -> tuple[ContentMatch, ...]:
    content = cfg.content
    if not content.active:
        return ()
    texts = [Part(SUBJECT, subject)] if subject and "subject" in content.scope else []
    return scan(content, [*texts, *parts])


# ---------------------------------------------------------------------------------------------
# subject


def decode_header_value(raw: str) -> str:
    """A header value as text: folding removed, RFC 2047 encoded words decoded (never raises)."""
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", raw)
    return str(email_policy.default.header_factory("Subject", unfolded))


def _trigger_pattern(trigger: str) -> re.Pattern[str]:
    return re.compile(_trigger_regex(trigger), re.IGNORECASE)


def _trigger_regex(trigger: str) -> str:
    words = [re.escape(w) for w in trigger.split()]
    # Not \b: a trigger such as "[secure]" starts and ends with non-word characters.
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


_GONE = "\x00"  # where a trigger was, while the subject is tidied
_SEP = r"[:;|\-\u2013\u2014]"
# Separators a removed trigger leaves at the start ("Secure - results") or the end
# ("results - secure"); only as whole words, so "-1 balance" or ":-)" keep theirs.
_LEADING = re.compile(rf"^\s*{_GONE}(?:[\s{_GONE}]|{_SEP}+(?=\s|$))*")
_TRAILING = re.compile(rf"(?:[\s{_GONE}]|(?<=\s){_SEP}+)*{_GONE}\s*$")


def remove_triggers(subject: str, triggers: Sequence[str]) -> str:
    """The subject without the trigger words, white space left around them collapsed.

    All triggers go in one pass, the longest first, so that a short trigger inside a longer one
    ("secure" in "zivver secure") cannot leave half of the longer behind. A colon right after a
    trigger goes with it ("Secure: results"), and so does a separator word that the removal
    leaves at either end ("Secure - results", "results - secure").
    """
    ordered = sorted({t for t in triggers if t.split()}, key=lambda t: -len(" ".join(t.split())))
    text = subject.replace(_GONE, " ")
    if ordered:
        either = "|".join(f"(?:{_trigger_regex(t)})" for t in ordered)
        text = re.sub(rf"(?:{either})(?:\s*:(?=\s|$))?", f" {_GONE} ", text, flags=re.IGNORECASE)
        text = _TRAILING.sub("", _LEADING.sub("", text))
    return " ".join(text.replace(_GONE, " ").split())


def encode_subject(text: str) -> str:
    """A Subject value for the milter: ASCII as it is, otherwise RFC 2047 UTF-8 encoded words."""
    policy = email_policy.SMTP.clone(linesep="\n")
    # Through the header object: Policy.fold leaves a short non-ASCII value unencoded.
    folded: str = policy.header_factory("Subject", text).fold(policy=policy)
    return folded.removeprefix("Subject:").removeprefix(" ").rstrip("\n")


# ---------------------------------------------------------------------------------------------
# sender


def _sender_match(cfg: SelectionConfig, headers: Headers, sender: str) -> str | None:
    if not cfg.senders:
        return None
    wanted = set(cfg.senders)
    candidates: list[str] = []
    if sender and sender != "<>":
        # An unusable envelope sender simply matches nothing.
        with contextlib.suppress(MessageError):
            candidates.append(normalize_address(sender))
    candidates += header_addresses([v for n, v in headers if n.lower() == "from"])
    for address in candidates:
        if address in wanted:
            return address
    return None


# ---------------------------------------------------------------------------------------------
# sensitivity labels

_MSIP_KEY = re.compile(r"^MSIP_Label_\{?([0-9a-f-]{36})\}?_([A-Za-z]+)$", re.IGNORECASE)


def parse_msip_labels(value: str) -> list[Label]:
    """The labels of one `msip_labels` header value, in order of appearance.

    The value is `;`-separated `MSIP_Label_<GUID>_<Key>=<value>` pairs (Enabled, Name, SetDate,
    Method, SiteId, ActionId, ContentBits); anything else in it is ignored.
    """
    order: list[str] = []
    names: dict[str, str] = {}
    enabled: dict[str, bool] = {}
    for part in decode_header_value(value).split(";"):
        key, sep, val = part.strip().partition("=")
        found = _MSIP_KEY.match(key.strip())
        if not sep or found is None:
            continue
        guid, field = found.group(1).lower(), found.group(2).lower()
        if guid not in order:
            order.append(guid)
        if field == "enabled":
            enabled[guid] = val.strip().lower() == "true"
        elif field == "name":
            names[guid] = val.strip()
    return [Label(g, names.get(g), enabled.get(g, False)) for g in order]


def _label_match(cfg: SelectionConfig, headers: Headers) -> Label | None:
    if not cfg.sensitivity_labels:
        return None
    wanted = {w.strip().strip("{}").lower() for w in cfg.sensitivity_labels}
    for name, value in headers:
        if name.strip().lower() != MSIP_HEADER:
            continue
        for label in parse_msip_labels(value):
            if not label.enabled:
                continue
            if label.id in wanted or (label.name is not None and label.name.lower() in wanted):
                return label
    return None


def _first(headers: Headers, name: str) -> str | None:
    want = name.lower()
    for n, v in headers:
        if n.strip().lower() == want:
            return v
    return None
