"""`zivmilter explain`: the admin's dry run, as JSON or a readable table.

Rendering only: the decision comes from assess.py and the submission verdict from submission.py,
exactly as the milter gets them. Secrets (phone numbers, access codes) are never printed, and what
the content rules found only masked.
"""

from __future__ import annotations

import json
from typing import Any

from zivmilter.core.assess import Assessment
from zivmilter.core.content import ContentMatch
from zivmilter.core.policy import Method, RecipientDecision
from zivmilter.core.submission import SubmissionResult

# What a recipient of an encrypted PDF goes without, compared with the portal (issue 26).
PDF_LOSSES = (
    "no revoke: the PDF stays readable in the recipient's mailbox",
    "no read status: the sender does not see whether or when it was opened",
    "no secure reply through the portal",
    "the access code is in the sender's hands only: it cannot be sent again or reset",
)


def recipient_json(d: RecipientDecision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "address": d.address,
        "method": d.method.value,
        "delivery": d.delivery.value,
        "level": d.level.value if d.level is not None else None,
        "rule": d.rule,
        "conversation": d.conversation,
        "access_right": d.access_right.value if d.access_right is not None else None,
        "reason": d.reason,
    }
    if d.next_hop:  # only NTA 7516 deliveries to ntamx hosts: other outputs stay as they were
        out["next_hop"] = list(d.next_hop)
    # Recipients' own keys (issue 26): only where one was used or skipped, likewise.
    if d.key is not None:
        out["key"] = {
            "kind": d.key.kind.value,
            "ident": d.key.ident,
            "source": d.key.source.value,
            "trusted_because": d.key.trusted_because,
        }
    if d.method is Method.PDF:  # likewise only for an encrypted PDF, or one refused
        out["encryption"] = {"kind": "pdf", "recipient_loses": list(PDF_LOSSES)}
    if d.pdf_refused:
        out["pdf_refused"] = d.pdf_refused
    if d.skipped_keys:
        out["skipped_keys"] = [
            {"kind": k.kind.value, "ident": k.ident, "source": k.source.value, "reason": k.reason}
            for k in d.skipped_keys
        ]
    return out


def _key_lines(d: RecipientDecision) -> list[str]:
    out = []
    if d.key is not None:
        k = d.key
        out.append(f"    key: {k.kind.value} {k.ident} from {k.source.value}: {k.trusted_because}")
    if d.method is Method.PDF:
        out.append("    encrypted as: pdf (AES-256, opened with the access code)")
        out.extend(f"    the recipient loses: {loss}" for loss in PDF_LOSSES)
    if d.pdf_refused:
        out.append(f"    {d.pdf_refused}")
    for s in d.skipped_keys:
        out.append(f"    skipped {s.kind.value} {s.ident or '(unreadable)'} from {s.source.value}:"
                   f" {s.reason}")  # fmt: skip
    return out


def match_json(m: ContentMatch) -> dict[str, str]:
    return {"rule": m.rule, "where": m.where, "masked": m.masked}


def match_text(m: ContentMatch) -> str:
    return f"{m.rule} in {m.where}: {m.masked}"


def submission_json(submission: SubmissionResult) -> dict[str, Any]:
    return {"accepted": submission.accepted, "reply": submission.reply, "reason": submission.reason}


def to_json(result: Assessment, submission: SubmissionResult | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if submission is not None:
        out["submission"] = submission_json(submission)
    out["selected"] = result.selection.selected
    out["selection_reason"] = result.selection.reason
    out["selection_matches"] = [match_json(m) for m in result.selection.matches]
    out["new_subject"] = result.selection.new_subject
    out["recipients"] = [recipient_json(d) for d in result.decision.recipients]
    out["warnings"] = list(result.decision.warnings)
    return out


def render_json(result: Assessment, submission: SubmissionResult | None = None) -> str:
    return json.dumps(to_json(result, submission), indent=2, ensure_ascii=False)


def refusal_json(reply: str, reason: str) -> dict[str, Any]:
    """A message the milter refuses before it decides anything (limits.py): no decision."""
    return {"refused": {"reply": reply, "reason": reason}}


def render_refusal(reply: str, reason: str) -> str:
    return "\n".join(
        [
            f"Refused: {reply}",
            f"  why: {reason}",
            "  nothing of it is stored or sent: the client gets this reply, no recipient a copy",
        ]
    )


def render_text(result: Assessment, submission: SubmissionResult | None = None) -> str:
    env = result.envelope
    lines = [f"Envelope sender: {env.sender or '<>'}"]
    if submission is not None:
        verdict = "accepted" if submission.accepted else f"REFUSED with {submission.reply}"
        lines.append(f"Submission: {verdict}")
        lines.append(f"  why: {submission.reason}")
    sel = result.selection
    lines.append(f"Selected: {'yes' if sel.selected else 'no (passes through unsecured)'}")
    lines.append(f"  why: {sel.reason}")
    if sel.new_subject is not None:
        lines.append(f"  new subject: {sel.new_subject}")
    if sel.matches:
        lines.append("  content rules found (masked):")
        lines.extend(f"    {match_text(m)}" for m in sel.matches)
    lines.append("")
    header = ("recipient", "delivery", "method", "level", "rule", "conv")
    rows = [
        (
            d.address,
            d.delivery.value,
            d.method.value
            + (
                f" ({d.access_right.value})"
                if d.method is Method.CUSTOM_ACCESS_RIGHT and d.access_right
                else ""
            ),
            d.level.value if d.level else "-",
            d.rule,
            str(d.conversation) if d.conversation is not None else "-",
        )
        for d in result.decision.recipients
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*header).rstrip())
    lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
    lines.extend(fmt.format(*r).rstrip() for r in rows)
    lines.append("")
    lines.append("Why:")
    for d in result.decision.recipients:
        lines.append(f"  {d.address} [{d.rule}]: {d.reason}")
        lines.extend(_key_lines(d))
    if result.decision.warnings:
        lines.append("")
        lines.append("Warnings:")
        lines.extend(f"  - {w}" for w in result.decision.warnings)
    return "\n".join(lines)
