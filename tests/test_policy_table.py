"""Every row of SPEC 3's decision tables, from the reference cases in data/policy_cases.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import make_config, split_header
from zivmilter.core.assess import assess
from zivmilter.core.explain import recipient_json
from zivmilter.core.facts import facts_from_mapping

DATA = yaml.safe_load((Path(__file__).parent / "data" / "policy_cases.yaml").read_text())
DEFAULT_RCPT = "r@partner.example"


@pytest.mark.parametrize("case", DATA["cases"], ids=[c["name"] for c in DATA["cases"]])
def test_decision_table(case: dict[str, Any]) -> None:
    cfg = make_config(case.get("config"), DATA["base_config"])
    facts = facts_from_mapping(case.get("facts") or {})
    rcpts = case.get("rcpts", [DEFAULT_RCPT])
    to_cc = case.get("to_cc", rcpts)
    headers = [("To", ", ".join(to_cc)), *(split_header(h) for h in case.get("headers", []))]
    result = assess(headers, "alice@hospital.example", rcpts, cfg, facts)

    expect = case["expect"]
    if "method" in expect or "rule" in expect or "delivery" in expect:
        expect = {DEFAULT_RCPT: expect}
    got = {d.address: recipient_json(d) for d in result.decision.recipients}
    assert len(got) == len({r.lower() for r in rcpts})
    for address, fields in expect.items():
        assert address in got, f"{address} missing from {sorted(got)}"
        for key, value in fields.items():
            # An absent key (next_hop is only there for a next hop) reads as null.
            assert got[address].get(key) == value, (
                f"{address}.{key}: expected {value!r}, got {got[address].get(key)!r} "
                f"({got[address]['rule']}: {got[address]['reason']})"
            )
    for fragment in case.get("warnings", []):
        assert any(fragment in w for w in result.decision.warnings), (
            f"no warning mentions {fragment!r}: {result.decision.warnings}"
        )
    if not case.get("warnings"):
        assert result.decision.warnings == ()
