"""`zivmilter explain`: the admin's dry run, as JSON or a readable table.

Rendering only: the decision comes from assess.py, exactly as the milter gets it. Secrets
(phone numbers, access codes) are never printed.
"""

from __future__ import annotations

import json
from typing import Any

from .assess import Assessment
from .policy import Method, RecipientDecision


def recipient_json(d: RecipientDecision) -> dict[str, Any]:
    return {
        "address": d.address,
        "method": d.method.value,
        "delivery": d.delivery.value,
        "level": d.level.value if d.level is not None else None,
        "rule": d.rule,
        "conversation": d.conversation,
        "access_right": d.access_right.value if d.access_right is not None else None,
        "reason": d.reason,
    }


def to_json(result: Assessment) -> dict[str, Any]:
    return {
        "recipients": [recipient_json(d) for d in result.decision.recipients],
        "warnings": list(result.decision.warnings),
    }


def render_json(result: Assessment) -> str:
    return json.dumps(to_json(result), indent=2, ensure_ascii=False)


def render_text(result: Assessment) -> str:
    env = result.envelope
    lines = [f"Envelope sender: {env.sender or '<>'}", ""]
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
    lines.extend(f"  {d.address} [{d.rule}]: {d.reason}" for d in result.decision.recipients)
    if result.decision.warnings:
        lines.append("")
        lines.append("Warnings:")
        lines.extend(f"  - {w}" for w in result.decision.warnings)
    return "\n".join(lines)
