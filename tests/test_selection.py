"""Selection (SPEC 6): each rule alone and combined, trigger removal, RFC 2047 subjects, labels."""

from __future__ import annotations

from email.header import decode_header, make_header
from typing import Any

import pytest

from tests.fakes import make_config
from zivmilter.core.assess import assess
from zivmilter.core.facts import StaticFacts
from zivmilter.core.policy import Delivery, Method
from zivmilter.core.selection import Selection, parse_msip_labels, select

GUID = "f42aa342-8706-4288-bd11-ebb85995028c"
OTHER_GUID = "3c9a8e1b-1111-4c3e-9b9b-5f0c2d7e0a01"


def msip(guid: str = GUID, name: str = "Confidential", enabled: str = "true") -> str:
    """An msip_labels value as Outlook writes it."""
    return (
        f"MSIP_Label_{guid}_Enabled={enabled}; MSIP_Label_{guid}_SetDate=2026-11-24T09:00:00Z; "
        f"MSIP_Label_{guid}_Method=Standard; MSIP_Label_{guid}_Name={name}; "
        f"MSIP_Label_{guid}_SiteId=72f988bf-86f1-41af-91ab-2d7cd011db47; "
        f"MSIP_Label_{guid}_ActionId=8b1c0f9e-0000-4000-8000-000000000000; "
        f"MSIP_Label_{guid}_ContentBits=0"
    )


RULES: dict[str, Any] = {
    "mode": "rules",
    "subject_triggers": ["[secure]", "vertrouwelijk"],
    "senders": ["lab@hospital.example"],
    "sensitivity_labels": ["Highly Confidential", GUID],
    "directive_headers": True,
}


def sel(
    headers: list[tuple[str, str]], sender: str = "app@hospital.example", **over: Any
) -> Selection:
    cfg = make_config({"selection": {**RULES, **over}})
    return select(cfg.selection, headers, sender)


def base(
    subject: str = "Lab results", frm: str = "App <app@hospital.example>"
) -> list[tuple[str, str]]:
    return [("From", frm), ("To", "bob@partner.example"), ("Subject", subject)]


def test_mode_all_selects_everything() -> None:
    cfg = make_config()  # the default: securing too much is the safe side
    got = select(cfg.selection, base(), "app@hospital.example")
    assert got.selected and "mode is all" in got.reason and got.new_subject is None


def test_no_rule_matches() -> None:
    got = sel(base())
    assert not got.selected
    assert got.reason == "no selection rule matched (selection.mode is rules)"
    assert got.matched == ()


@pytest.mark.parametrize(
    ("subject", "selected"),
    [
        ("Lab results [secure]", True),
        ("[SECURE] lab results", True),  # case-insensitive
        ("Re: [Secure]: lab", True),
        ("Vertrouwelijk: uitslag", True),
        ("VERTROUWELIJK", True),
        ("onvertrouwelijk nieuws", False),  # whole word only
        ("vertrouwelijke uitslag", False),
        ("vertrouwelijk_2026", False),  # _ is a word character
        ("[secure", False),
        ("secure", False),  # "[secure]" needs its brackets
    ],
)
def test_subject_trigger_whole_word(subject: str, selected: bool) -> None:
    got = sel(base(subject))
    assert got.selected is selected, got
    if selected:
        assert got.matched == ("subject",)
        assert "subject contains trigger word" in got.reason


def test_multi_word_trigger_matches_across_white_space() -> None:
    got = sel(base("please send  Secure\tnow"), subject_triggers=["send secure"])
    assert got.selected


def test_trigger_inside_rfc2047_encoded_word() -> None:
    # "Vertrouwelijk: uitslag é" entirely inside a Q-encoded word, and "[secure]" in base64.
    got = sel(base("=?utf-8?q?Vertrouwelijk=3A_uitslag_=C3=A9?="))
    assert got.selected and "'vertrouwelijk'" in got.reason
    got = sel(base("Result =?utf-8?b?W3NlY3VyZV0=?="))
    assert got.selected and "'[secure]'" in got.reason


def test_folded_subject_is_unfolded_first() -> None:
    got = sel(base("=?utf-8?q?Lab_results?=\r\n =?utf-8?q?_=5Bsecure=5D?="))
    assert got.selected


def test_trigger_removed_from_subject() -> None:
    got = sel(base("Lab [secure] results"), remove_trigger=True)
    assert got.selected and got.new_subject == "Lab results"
    got = sel(base("[secure] Lab results"), remove_trigger=True)
    assert got.new_subject == "Lab results"
    got = sel(base("Vertrouwelijk [SECURE]"), remove_trigger=True)
    assert got.new_subject == ""


@pytest.mark.parametrize(
    "order", [["secure", "zivver secure", "[secure]"], ["[secure]", "zivver secure", "secure"]]
)
@pytest.mark.parametrize(
    ("subject", "left"),
    [
        ("Zivver Secure: lab results", "lab results"),
        ("[secure] Lab results", "Lab results"),
        ("Re: [Secure]: lab results", "Re: lab results"),
        ("Lab results - secure", "Lab results"),
        ("secure: [secure] zivver secure", ""),
        ("[secure] -1 balance on account", "-1 balance on account"),
        ("[secure] :-) thanks", ":-) thanks"),
        ("-- note -- [secure] x", "-- note -- x"),
        ("Secure - results", "results"),
    ],
)
def test_trigger_removal_does_not_depend_on_the_order_of_triggers(
    order: list[str], subject: str, left: str
) -> None:
    # A shorter trigger inside a longer one must not leave half of the longer behind.
    got = sel(base(subject), subject_triggers=order, remove_trigger=True)
    assert got.selected and got.new_subject == left


def test_trigger_kept_without_remove_trigger() -> None:
    got = sel(base("Lab [secure] results"))
    assert got.selected and got.new_subject is None


def test_removal_reencodes_a_non_ascii_subject() -> None:
    got = sel(base("=?iso-8859-1?q?Caf=E9_[secure]_r=E9sultats?="), remove_trigger=True)
    assert got.new_subject is not None
    assert got.new_subject.isascii() and "=?utf-8?" in got.new_subject
    assert str(make_header(decode_header(got.new_subject))) == "Café résultats"
    assert "secure" not in str(make_header(decode_header(got.new_subject))).lower()


def test_removal_folds_a_long_subject_with_lf() -> None:
    long = "Lab results " + " ".join(["word"] * 30) + " [secure]"
    got = sel(base(long), remove_trigger=True)
    assert got.new_subject is not None
    assert "\n " in got.new_subject and "\r" not in got.new_subject
    assert " ".join(got.new_subject.split()) == long.removesuffix(" [secure]")


def test_remove_trigger_also_in_mode_all() -> None:
    cfg = make_config({"selection": {"subject_triggers": ["[secure]"], "remove_trigger": True}})
    got = select(cfg.selection, base("Lab [secure]"), "")
    assert got.selected and got.new_subject == "Lab"


@pytest.mark.parametrize(
    ("sender", "frm", "selected"),
    [
        ("lab@hospital.example", "App <app@hospital.example>", True),  # envelope sender
        ("bounce@hospital.example", "Lab <LAB@Hospital.Example>", True),  # From, any case
        ("<Lab@hospital.example>", "x@hospital.example", True),
        ("app@hospital.example", "App <app@hospital.example>", False),
        ("", "not an address", False),
    ],
)
def test_sender_rule(sender: str, frm: str, selected: bool) -> None:
    got = sel(base(frm=frm), sender=sender)
    assert got.selected is selected, got
    if selected:
        assert got.matched == ("sender",)
        assert "lab@hospital.example is in selection.senders" in got.reason


@pytest.mark.parametrize(
    ("value", "selected"),
    [
        (msip(), True),  # by id
        (msip(GUID.upper()), True),  # id, any case
        (msip(OTHER_GUID, "Highly Confidential"), True),  # by name
        (msip(OTHER_GUID, "highly confidential"), True),  # name, any case
        (msip(OTHER_GUID, "Public"), False),
        (msip(enabled="false"), False),  # only enabled labels count
        (msip(OTHER_GUID, "Public") + "; " + msip(), True),  # one of two labels
        ("garbage; MSIP_Label_nope_Name=Highly Confidential", False),
    ],
)
def test_sensitivity_label(value: str, selected: bool) -> None:
    got = sel([*base(), ("msip_labels", value)])
    assert got.selected is selected, got
    if selected:
        assert got.matched == ("label",) and "sensitivity label" in got.reason


def test_label_header_name_any_case_and_folded() -> None:
    value = msip().replace("; ", ";\r\n ")
    got = sel([*base(), ("MSIP_Labels", value)])
    assert got.selected and f"Confidential ({GUID})" in got.reason


def test_label_configured_with_braces() -> None:
    got = sel([*base(), ("msip_labels", msip())], sensitivity_labels=["{" + GUID.upper() + "}"])
    assert got.selected


def test_parse_msip_labels() -> None:
    labels = parse_msip_labels(msip(OTHER_GUID, "Public", "false") + ";" + msip())
    assert [(x.id, x.name, x.enabled) for x in labels] == [
        (OTHER_GUID, "Public", False),
        (GUID, "Confidential", True),
    ]


@pytest.mark.parametrize(
    "header",
    ["zivver-access-right", "Zivver-Direct-Delivery", "ZIVVER-MINIMUM-RECIPIENT-VERIFICATION"],
)
def test_directive_header_selects(header: str) -> None:
    got = sel([*base(), (header, "whatever")])
    assert got.selected and got.matched == ("directive",)
    assert f"directive header {header.lower()} present" in got.reason


def test_directive_header_rule_can_be_off() -> None:
    got = sel([*base(), ("zivver-direct-delivery", "tls tls1.2")], directive_headers=False)
    assert not got.selected


def test_rules_combined_all_reasons_listed() -> None:
    headers = [
        *base("Vertrouwelijk [secure]", "Lab <lab@hospital.example>"),
        ("msip_labels", msip()),
        ("zivver-direct-delivery", "tls tls1.2"),
    ]
    got = sel(headers, remove_trigger=True)
    assert got.selected
    assert got.matched == ("subject", "sender", "label", "directive")
    for fragment in (
        "'[secure]'",
        "'vertrouwelijk'",
        "lab@hospital.example",
        GUID,
        "zivver-direct-delivery",
    ):
        assert fragment in got.reason
    assert got.new_subject == ""


def test_each_rule_can_select_alone_when_the_others_are_off() -> None:
    off: dict[str, Any] = {
        "subject_triggers": [],
        "senders": [],
        "sensitivity_labels": [],
        "directive_headers": False,
    }
    assert not sel([*base("[secure]"), ("msip_labels", msip())], **off).selected
    assert sel(base("[secure]"), **{**off, "subject_triggers": ["[secure]"]}).selected
    lab = "lab@hospital.example"
    assert sel(base(frm=lab), **{**off, "senders": [lab]}).selected
    assert sel([*base(), ("msip_labels", msip())], **{**off, "sensitivity_labels": [GUID]}).selected
    directive = ("zivver-access-right", "x")
    assert sel([*base(), directive], **{**off, "directive_headers": True}).selected


# --- through assess(): what the milter and explain get -----------------------------------------


def test_unselected_message_passes_through_every_recipient() -> None:
    cfg = make_config({"selection": RULES})
    headers = [*base(), ("Cc", "carol@oldmail.example")]
    rcpts = ["bob@partner.example", "carol@oldmail.example"]
    facts = StaticFacts(accounts=frozenset({"bob@partner.example"}))
    result = assess(headers, "app@hospital.example", rcpts, cfg, facts)
    assert not result.selection.selected
    got = [(d.address, d.delivery, d.method, d.conversation) for d in result.decision.recipients]
    assert got == [
        ("bob@partner.example", Delivery.PASS, Method.NONE, None),
        ("carol@oldmail.example", Delivery.PASS, Method.NONE, None),
    ]
    assert all("not selected" in d.reason for d in result.decision.recipients)


def test_selected_message_gets_the_policy_decision() -> None:
    cfg = make_config({"selection": RULES})
    result = assess(
        base("[secure] x"),
        "app@hospital.example",
        ["bob@partner.example"],
        cfg,
        StaticFacts(accounts=frozenset({"bob@partner.example"})),
    )
    assert result.selection.selected
    (d,) = result.decision.recipients
    assert (d.method, d.delivery) == (Method.ACCOUNT, Delivery.NOTIFICATION)
