"""Facts composed in layers (ConfiguredFacts, KeyedFacts): each answers its own questions and
passes every other one to the source below, unchanged."""

from __future__ import annotations

from tests.fakes import make_config
from zivmilter.core.facts import (
    ConfiguredFacts,
    Contact,
    Facts,
    KeyedFacts,
    NtaFact,
    StaticFacts,
    TransportFact,
    facts_from_mapping,
)
from zivmilter.core.keys import KeyKind, KeyLookup, KeySource, RecipientKey
from zivmilter.core.levels import Level

PINNED = facts_from_mapping(
    {
        "accounts": ["a@pinned.example"],
        "idd": ["idd.example"],
        "transport": {"tls.example": "dane"},
        "nta7516": ["nta.example", "excluded.example"],
        "contacts": {"c@pinned.example": {"sms": "+31612345678"}},
        "odd": ["odd.example"],
        "keys": {"k@pinned.example": {"kind": "openpgp", "ident": "PINNED"}},
    }
)
FOUND = RecipientKey(
    KeyKind.SMIME, "k@pinned.example", "FOUND", KeySource.KEYSTORE, "store", None, b"k"
)


class _Finder:
    def lookup(self, address: str) -> KeyLookup:
        return KeyLookup(FOUND if address == "k@pinned.example" else None)


def _passed_on(facts: Facts, source: StaticFacts) -> list[str]:
    """The questions `facts` answers as `source` does, over names that source knows and not."""
    same = []
    for name in ("a@pinned.example", "c@pinned.example", "nobody@x.example"):
        if facts.has_account(name) == source.has_account(name):
            same.append(f"has_account {name}")
        if facts.contact(name) == source.contact(name):
            same.append(f"contact {name}")
    for domain in ("tls.example", "odd.example", "x.example"):
        if facts.transport(domain) == source.transport(domain):
            same.append(f"transport {domain}")
        if facts.odd_listed(domain) == source.odd_listed(domain):
            same.append(f"odd_listed {domain}")
    return same


ALL_PASSED_ON = _passed_on(PINNED, PINNED)


def test_configured_facts_answer_the_config_lists_and_pass_on_the_rest() -> None:
    cfg = make_config(
        {"idd": {"domains": ["conf.example"]}, "nta7516": {"exclude": ["excluded.example"]}}
    )
    facts = ConfiguredFacts(PINNED, cfg)
    assert _passed_on(facts, PINNED) == ALL_PASSED_ON
    assert facts.idd_enabled("conf.example") and facts.idd_enabled("idd.example")
    assert not facts.idd_enabled("x.example")
    assert facts.nta7516("nta.example") == PINNED.nta7516("nta.example")
    assert facts.nta7516("excluded.example") == NtaFact(
        False, "excluded in the configuration (nta7516.exclude)"
    )
    assert facts.recipient_key("k@pinned.example") == PINNED.recipient_key("k@pinned.example")


def test_keyed_facts_answer_keys_from_the_finder_and_pass_on_the_rest() -> None:
    facts = KeyedFacts(PINNED, _Finder())
    assert _passed_on(facts, PINNED) == ALL_PASSED_ON
    assert facts.idd_enabled("idd.example") and not facts.idd_enabled("x.example")
    assert facts.nta7516("excluded.example") == PINNED.nta7516("excluded.example")
    assert facts.recipient_key("k@pinned.example") == KeyLookup(FOUND)
    assert facts.recipient_key("x@pinned.example") == KeyLookup()


def test_layers_stack() -> None:
    cfg = make_config({"idd": {"domains": ["conf.example"]}})
    facts = ConfiguredFacts(KeyedFacts(PINNED, _Finder()), cfg)
    assert _passed_on(facts, PINNED) == ALL_PASSED_ON
    assert facts.idd_enabled("conf.example")
    assert facts.recipient_key("k@pinned.example") == KeyLookup(FOUND)
    assert facts.transport("tls.example") == TransportFact(
        Level.DANE, PINNED.transport("tls.example").tls_version, "dane (from facts file)"
    )
    assert facts.contact("c@pinned.example") == Contact("+31612345678")
