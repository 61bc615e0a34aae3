"""The content rules' pre-check (content._may_match, issue 17) is exact: with it, `scan` finds
what RE2 reading every text finds, for every combination of the built-in rules, in every place a
match can be: each row of tests/data/content_cases.yaml as a plain, an HTML and a DOCX/PDF
attachment's text, the subject and the attachment names; every message of the shared corpus;
and seeded random texts of digits, separators and letters with BSNs, IBANs and card numbers
written every way the rules read them (and ways they do not). It also skips: the letters of
bench/content.py and the rows that must not match never reach RE2.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest
import re2
import yaml

from tests.budget import examples, sample
from tests.fakes import make_config
from tests.test_attachment_text import docx, pdf
from tests.test_gateway_corpus import FILES
from zivmilter.core import content
from zivmilter.core.attachtext import extract
from zivmilter.core.bodytext import attachments_of_message, parts_of_message
from zivmilter.core.config import ContentConfig
from zivmilter.core.content import SUBJECT, ContentMatch, Part, attachment_where
from zivmilter.core.message import decoded_header

CASES = yaml.safe_load((Path(__file__).parent / "data" / "content_cases.yaml").read_text())
BUILTIN = ("bsn", "iban", "payment_card")
SCOPE = ["subject", "text", "attachment_names", "attachment_text"]


def _rule_sets() -> list[dict[str, Any]]:
    """Every non-empty combination of the built-in rules, the BSN with and without context."""
    out: list[dict[str, Any]] = []
    for n in range(1, 4):
        for on in itertools.combinations(BUILTIN, n):
            rules: dict[str, Any] = {r: r in on for r in BUILTIN}
            out.append(rules)
            if "bsn" in on:
                out.append({**rules, "bsn_require_context": True})
    return out


RULE_SETS = [
    make_config({"selection": {"content": {**rules, "scope": SCOPE}}}).selection.content
    for rules in _rule_sets()
]


def scan_with(precheck: bool, cfg: ContentConfig, parts: list[Part]) -> tuple[ContentMatch, ...]:
    """`scan` with the pre-check on every text whatever its length, or without it (RE2 reads
    every text, as before the pre-check)."""
    saved = content._PRECHECK_MAX_BYTES
    content._PRECHECK_MAX_BYTES = 1 << 62 if precheck else -1
    try:
        return content.scan(cfg, parts)
    finally:
        content._PRECHECK_MAX_BYTES = saved


def assert_same(parts: list[Part]) -> int:
    """The pre-checked scan finds what the full one finds, for every rule set; how many rule
    sets found something."""
    found = 0
    for cfg in RULE_SETS:
        expected = scan_with(False, cfg, parts)
        assert scan_with(True, cfg, parts) == expected, (cfg, parts)
        found += bool(expected)
    return found


def message_parts(data: bytes) -> list[Part]:
    """The text of a message as the gateway gives it to the rules: subject (as selection.py
    adds it), text and HTML parts, attachment names, and the text of PDF/DOCX/XLSX/ODT
    attachments (read here, in this process, by the same extractors)."""
    msg = BytesParser(policy=compat32).parsebytes(data)
    subject = decoded_header(str(msg.get("Subject", "")))
    parts = [Part(SUBJECT, subject)] if subject else []
    parts += parts_of_message(data, SCOPE)
    for att in attachments_of_message(data, 1024 * 1024):
        if att.kind is not None and att.data is not None:
            try:
                text = extract(att.kind, att.data, 4 * 1024 * 1024)
            except ValueError:
                continue  # unreadable: not scanned in the milter either
            parts.append(Part(attachment_where(att.filename), text))
    return parts


def message_with(text: str) -> bytes:
    """A message carrying `text` in every place the rules read: the subject (its first line),
    a text/plain part, an HTML part (its spaces as &nbsp;, a tag inside each number), an
    attachment's name, and the text of a DOCX and a PDF attachment."""
    msg = EmailMessage()
    msg["From"] = "alice@hospital.example"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = text.splitlines()[0] if text.strip() else "x"
    msg.set_content(text)
    html = "<p>" + text.replace(" ", "&nbsp;").replace("1", "<b>1</b>") + "</p>"
    msg.add_alternative(html, subtype="html")
    name = text.replace("\n", " ")[:60] + ".txt"
    msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=name)
    msg.add_attachment(
        docx(*text.splitlines()),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="brief.docx",
    )
    latin = text.encode("latin-1", "replace").decode("latin-1")
    msg.add_attachment(pdf(*latin.splitlines()), maintype="application", subtype="pdf")
    return bytes(msg)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_every_case_finds_the_same_everywhere(case: dict[str, Any]) -> None:
    parts = message_parts(message_with(case["text"]))
    assert {p.where for p in parts} >= {SUBJECT, "text/plain", "text/html", "attachment name"}
    assert any(p.where.startswith("attachment ") and p.where != "attachment name" for p in parts)
    found = assert_same(parts)
    if case["found"] and not case.get("content", {}).get("patterns"):
        assert found, "a row that matches matches with some rule set"


@pytest.mark.parametrize("path", sample(FILES), ids=lambda p: p.name)
def test_every_corpus_message_finds_the_same(path: Path) -> None:
    assert_same(message_parts(path.read_bytes()))


# ---------------------------------------------------------------------------------------------
# random texts


def _bsn(rnd: random.Random, valid: bool) -> str:
    while True:
        digits = f"{rnd.randint(0, 10**9 - 1):09d}"
        if content.bsn_valid(digits) is valid:
            return digits


def _luhn_digit(body: str) -> str:
    for d in "0123456789":
        if content.luhn_valid(body + d):
            return d
    raise AssertionError(body)


def _card(rnd: random.Random) -> str:
    prefix, length = rnd.choice(
        [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("2221", 16), ("34", 15), ("37", 15),
         ("6011", 16), ("36", 14), ("3528", 17), ("62", 18), ("5018", 13), ("9", 16)]
    )  # fmt: skip
    body = prefix + "".join(rnd.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return body + _luhn_digit(body)


IBANS = ["NL91ABNA0417164300", "DE89370400440532013000", "GB29NWBK60161331926819",
         "BE68539007547034", "FR1420041010050500013M02606", "CH9300762011623852957",
         "NO9386011117947", "MT84MALT011000012345MTLCAST001S"]  # fmt: skip


def _grouped(rnd: random.Random, digits: str, seps: str) -> str:
    """`digits` (or an IBAN) in groups: sizes at random, or the BSN's and cards' usual ones."""
    usual = {9: [(9,), (4, 2, 3), (3, 3, 3), (3, 2, 2, 2)], 16: [(4, 4, 4, 4)], 15: [(4, 6, 5)]}
    if len(digits) in usual and rnd.random() < 0.6:
        sizes: tuple[int, ...] = rnd.choice(usual[len(digits)])
    else:
        cuts = sorted(rnd.sample(range(1, len(digits)), rnd.randint(0, min(5, len(digits) - 1))))
        sizes = tuple(b - a for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True))
    sep = rnd.choice(seps)  # mostly one separator throughout, now and then another
    out, at = [], 0
    for size in sizes:
        if at:
            out.append(rnd.choice(seps) if rnd.random() < 0.2 else sep)
        out.append(digits[at : at + size])
        at += size
    return "".join(out)


WORDS = ["BSN", "bsn:", "Burgerservicenummer", "sofinummer", "IBAN", "kaart", "nr", "EUR",
         "Tel", "x", "AB", "NL", "é", "_", "€", "ß", "\u00a0", "\u202f", "\t", "\n", "(", ")",
         ";", "/"]  # fmt: skip
SEPARATORS = [" ", ".", "-", ",", "  ", "..", "\u00a0", "\n", "/", "", "_", "a", ":"]


def random_text(rnd: random.Random) -> str:
    tokens: list[str] = []
    for _ in range(rnd.randint(1, 8)):
        kind = rnd.random()
        if kind < 0.3:
            tokens.append(_grouped(rnd, _bsn(rnd, rnd.random() < 0.7), ". -,\u00a0"))
        elif kind < 0.45:
            tokens.append(_grouped(rnd, _card(rnd), " --."))
        elif kind < 0.55:
            iban = rnd.choice(IBANS)
            tokens.append(iban if rnd.random() < 0.3 else _grouped(rnd, iban, "  -"))
        elif kind < 0.75:
            n = rnd.randint(1, 20)
            tokens.append("".join(rnd.choice("0123456789 .-") for _ in range(n)).strip() or "1")
        else:
            tokens.append(rnd.choice(WORDS))
    return "".join(t + rnd.choice(SEPARATORS) for t in tokens)


def random_texts(n: int, seed: int = 17) -> Iterator[str]:
    rnd = random.Random(seed)
    for _ in range(n):
        yield random_text(rnd)


def test_random_texts_find_the_same() -> None:
    texts = list(random_texts(examples(3000)))
    found = sum(assert_same([Part("text/plain", t)]) > 0 for t in texts)
    skipped = sum(
        not content._may_match(t.encode("utf-8", "surrogatepass"), BUILTIN) for t in texts
    )
    # both ways are taken often: the texts hold matches, and texts the pre-check skips
    assert found > len(texts) // 4, found
    assert skipped > len(texts) // 10, skipped


# RE2's candidates for each rule alone, to check the pre-check against each one
_ALONE = {
    rule: re2.compile(content._SOURCES[rule], content._options(latin1=True)) for rule in BUILTIN
}


def _could_match(rule: str, data: bytes) -> bool:
    """Whether RE2 finds a candidate of `rule` in `data`, starting anywhere, that the checks
    after it could accept: any card or IBAN candidate, a BSN candidate passing the eleven-test."""
    pattern = _ALONE[rule]
    m = pattern.search(data)
    while m is not None:
        if rule != "bsn" or content._eleven(m.group().replace(b".", b"").replace(b" ", b"")):
            return True
        m = pattern.search(data, m.start() + 1)  # every candidate, overlapping ones too
    return False


def test_the_pre_check_answers_for_each_rule_alone() -> None:
    # Sharper than the matches alone: whenever RE2 finds a candidate of a rule that could be
    # accepted, the pre-check for that rule says so (it may say so more often, never less).
    checked = dict.fromkeys(BUILTIN, 0)
    n = examples(3000)
    for text in random_texts(n, seed=23):
        data = text.replace("\u00a0", " ").encode("utf-8", "surrogatepass")
        for rule in BUILTIN:
            if _could_match(rule, data):
                checked[rule] += 1
                assert content._may_match(data, (rule,)), (rule, text)
    assert all(k > n // 20 for k in checked.values()), checked  # each rule met often


# ---------------------------------------------------------------------------------------------
# and it skips


def _bench_letters() -> list[str]:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "content.py"
    spec = importlib.util.spec_from_file_location("bench_content", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return [bench.letter_text(4600, seed=7, references=r)[0] for r in (False, True)]


# rows of the data file without a candidate RE2 could accept (the other rows that must not
# match hold one: a card number failing Luhn, an amount whose digits pass the eleven-test...)
NO_CANDIDATE = ["phone numbers", "dates and times", "order numbers failing the checks",
                "postcodes and house numbers", "nine digits failing the eleven-test",
                "a valid bsn inside a longer number"]  # fmt: skip


def test_letters_without_a_match_never_reach_re2() -> None:
    rows = {c["name"]: c["text"] for c in CASES}
    for text in _bench_letters() + [rows[name] for name in NO_CANDIDATE]:
        assert not content._may_match(text.encode(), BUILTIN), text
