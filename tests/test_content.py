"""Content rules (issue 17), pure: every row of tests/data/content_cases.yaml as a message whose
text/plain body is the row's text, through the path the milter and `explain` share (bodytext ->
assess), checked as explain's JSON shows it; then where a match can be (subject, HTML, names),
the limits, and config errors."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import make_config
from zivmilter import defaults
from zivmilter.core import config as config_mod
from zivmilter.core import content
from zivmilter.core.assess import assess
from zivmilter.core.bodytext import html_text, parts_of_body, parts_of_message
from zivmilter.core.config import Config
from zivmilter.core.explain import render_text, to_json
from zivmilter.core.facts import StaticFacts
from zivmilter.core.message import read_headers
from zivmilter.errors import ConfigError

CASES = yaml.safe_load((Path(__file__).parent / "data" / "content_cases.yaml").read_text())
ALL_ON: dict[str, Any] = {"bsn": True, "iban": True, "payment_card": True}


def config(content: dict[str, Any] | None = None, mode: str = "rules") -> Config:
    rules = {**ALL_ON, **(content or {})}
    return make_config({"selection": {"mode": mode, "directive_headers": False, "content": rules}})


def eml(body: str = "Hello", subject: str = "Results", **extra: Any) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@hospital.example"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = subject
    msg.set_content(body, **extra)
    return bytes(msg)


def explained(cfg: Config, data: bytes) -> dict[str, Any]:
    headers = read_headers(data)
    parts = parts_of_message(data, cfg.selection.content.scope)
    result = assess(
        headers, "alice@hospital.example", ["bob@partner.example"], cfg, StaticFacts(), parts
    )
    return to_json(result)


def _numbers(text: str) -> list[str]:
    return ["".join(c for c in w if c.isdigit()) for w in text.split()]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    cfg = config(case.get("content"))
    out = explained(cfg, eml(case["text"]))
    found = [[m["rule"], m["masked"]] for m in out["selection_matches"]]
    assert found == case["found"]
    assert all(m["where"] == "text/plain" for m in out["selection_matches"])
    assert out["selected"] is bool(case["found"])
    for m in out["selection_matches"]:  # masked: at most the last three letters or digits
        assert sum(c.isalnum() for c in m["masked"].replace("*", "")) <= 3
    if case["found"]:
        assert out["selection_reason"].startswith("content rule matched: ")
        shown = out["selection_reason"] + repr(out["selection_matches"])
        for m in out["selection_matches"]:  # the match itself is nowhere in the output
            assert m["masked"].count("*") >= 6
        assert not any(len(w) > 3 and w in shown for w in _numbers(case["text"]))


def test_every_place_a_match_can_be() -> None:
    msg = EmailMessage()
    msg["From"] = "alice@hospital.example"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = "=?utf-8?q?Uitslag_BSN_1234=2E56=2E782?="
    msg.set_content("Zie de bijlage.")
    html = (
        "<p>Rekening:<br>NL91&nbsp;ABNA&nbsp;0417&nbsp;1643&nbsp;00</p>"
        "<script>4111111111111111</script>"
    )
    msg.add_alternative(html, subtype="html")
    msg.add_attachment(
        b"%PDF 111222333", maintype="application", subtype="pdf", filename="brief 999999990.pdf"
    )
    msg.add_attachment("kaart 4111 1111 1111 1111", filename="notes.txt")
    out = explained(config(), bytes(msg))
    assert out["selection_matches"] == [
        {"rule": "bsn", "where": "subject", "masked": "****.**.782"},
        {"rule": "iban", "where": "text/html", "masked": "**** **** **** ***3 00"},
        {"rule": "bsn", "where": "attachment name", "masked": "******990"},
    ]  # not inside <script>, not in an attachment's content (attachment text is not read)


def test_scope_limits_where_to_look() -> None:
    data = eml("BSN 111222333", subject="BSN 123456782")
    only_subject = explained(config({"scope": ["subject"]}), data)
    assert [m["where"] for m in only_subject["selection_matches"]] == ["subject"]
    only_text = explained(config({"scope": ["text"]}), data)
    assert [m["where"] for m in only_text["selection_matches"]] == ["text/plain"]


@pytest.mark.parametrize(
    "extra",
    [{"cte": "base64"}, {"cte": "quoted-printable"}, {"charset": "iso-8859-1", "cte": "8bit"}],
    ids=["base64", "quoted-printable", "latin-1"],
)
def test_encoded_bodies_are_decoded(extra: dict[str, str]) -> None:
    out = explained(config(), eml("Geachte heer Müller, uw BSN is 111222333.", **extra))
    assert [m["masked"] for m in out["selection_matches"]] == ["******333"]


LATIN1_BODY = "Geachte heer Müller, uw BSN is 111.222.333.\n".encode("iso-8859-1")
QP_BODY = b"Geachte heer M=C3=BCller, uw BSN is 1112=\n22333.\n"
HTML_QP = b"<p>BSN</p><p>111=\n222333&nbsp;=C3=A9</p>\n"
# (MIME header fields, body) of single-part messages: the fields the gateway reads itself and
# those it leaves to `email`
SINGLE_PARTS = [
    ("", b"BSN 111222333\n"),
    ("Content-Type: text/plain\n", b"BSN 111222333\n"),
    ('Content-Type: text/plain; charset="iso-8859-1"\nContent-Transfer-Encoding: 8bit\n',
     LATIN1_BODY),
    ("Content-Type: TEXT/Plain ; Charset = ISO-8859-1 ; format=flowed; delsp=yes\n", LATIN1_BODY),
    ("Content-Type: text/plain; charset=iso-8859-1; charset=utf-8\n", LATIN1_BODY),
    ("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
     QP_BODY),
    ("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: Quoted-Printable\n",
     QP_BODY),
    ("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
     HTML_QP),
    ("Content-Type: text/plain; charset=x-unknown\n", LATIN1_BODY),
    ("Content-Type: text/plain; charset=\"\"\n", LATIN1_BODY),
    ("Content-Type: text/plain;\n charset=utf-8\nContent-Transfer-Encoding: 7bit\n",
     b"BSN 111222333\n"),
    ("Content-Type: text/plain; name=\"bsn 111222333.txt\"\n", b"BSN 111222333\n"),
    ('Content-Type: text/plain\nContent-Disposition: attachment; filename="a.txt"\n',
     b"BSN 111222333\n"),
    ("Content-Type: text/plain; charset*=utf-8''%C3%BC\n", b"BSN 111222333\n"),
    ('Content-Type: text/plain; charset="utf;8"\n', b"BSN 111222333\n"),
    ("Content-Type: text/html\nContent-Type: text/plain\n", b"<b>BSN</b> 111222333\n"),
    ("Content-Type: text\n", b"BSN 111222333\n"),
    ("Content-Type: application/pdf\n", b"BSN 111222333\n"),
    ("Content-Type: text/plain\nContent-Transfer-Encoding: base64\n", b"QlNOIDExMTIyMjMzMw==\n"),
    ("Content-Type: text/plain\nContent-Transfer-Encoding: x-unknown\n", b"BSN 111222333\n"),
]  # fmt: skip


@pytest.mark.parametrize("fields,body", SINGLE_PARTS)
def test_the_milters_path_reads_the_same_as_a_file(fields: str, body: bytes) -> None:
    # The gateway does not parse a single-part message again: its header fields come from the
    # MTA; plain ones it reads itself, the rest `email` reads. Both paths find the same.
    scope = config().selection.content.scope
    head = f"From: alice@hospital.example\nSubject: Results\n{fields}".encode()
    data = (head + b"\n" + body).replace(b"\n", b"\r\n")
    offset = len(head.replace(b"\n", b"\r\n")) + 2
    read = parts_of_body(read_headers(data), data, offset, scope)
    assert read == parts_of_message(data, scope)
    for only in (["subject"], ["attachment_names"], ["text"]):
        assert parts_of_body(read_headers(data), data, offset, only) == parts_of_message(data, only)


def test_the_milters_path_reads_encoded_messages_as_a_file() -> None:
    scope = config().selection.content.scope
    for data in (eml("BSN 111222333", cte="base64"), eml("x", subject="BSN 111222333")):
        head, _, _ = data.partition(b"\n\n")
        offset = len(head) + 2
        assert parts_of_body(read_headers(data), data, offset, scope) == parts_of_message(
            data, scope
        )


def test_mode_all_only_reports() -> None:
    out = explained(config(mode="all"), eml("BSN 111222333"))
    assert out["selected"] is True
    assert out["selection_reason"] == "selection.mode is all: every message is secured"
    assert out["selection_matches"] == [
        {"rule": "bsn", "where": "text/plain", "masked": "******333"}
    ]


def test_no_rules_no_matches_and_the_text_is_not_read() -> None:
    cfg = make_config({"selection": {"mode": "rules"}})
    assert not cfg.selection.content.active
    out = explained(cfg, eml("BSN 111222333"))
    assert out["selection_matches"] == []
    assert out["selected"] is False


def test_explain_text_shows_masked_matches() -> None:
    data = eml("IBAN NL91ABNA0417164300")
    cfg = config()
    result = assess(
        read_headers(data),
        "alice@hospital.example",
        ["bob@partner.example"],
        cfg,
        StaticFacts(),
        parts_of_message(data, cfg.selection.content.scope),
    )
    text = render_text(result)
    assert "    iban in text/plain: ***************300" in text
    assert "NL91ABNA0417164300" not in text


def test_text_beyond_the_limit_is_not_scanned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "CONTENT_MAX_TEXT_BYTES", 1000)
    near = explained(config(), eml("x" * 900 + " BSN 111222333"))
    far = explained(config(), eml("x" * 1100 + " BSN 111222333"))
    assert len(near["selection_matches"]) == 1
    assert far["selection_matches"] == []


def test_a_pattern_that_would_backtrack_forever_in_re_ends() -> None:
    # (a+)+$ on "aaa...ab" takes 2**n steps in a backtracking engine; RE2 is linear.
    cfg = config({"patterns": {"evil": "(a+)+$"}})
    out = explained(cfg, eml("a" * 5000 + "b"))
    assert out["selection_matches"] == []


def test_html_reduced_to_text() -> None:
    assert html_text("<p>BSN</p><p>1234<b>.56.</b>782</p>").split() == ["BSN", "1234.56.782"]
    assert html_text("<style>p{}</style>a&amp;b<td>1</td><td>2</td>").split() == ["a&b", "1", "2"]
    assert html_text("<!-- 111222333 --><SCRIPT>x</script >y").split() == ["y"]
    assert "a" in html_text("<a <a " * 20000)  # unclosed tags: ends (linear), keeps the text


# ---------------------------------------------------------------------------------------------
# configuration errors name the file and the key path


@pytest.mark.parametrize(
    ("content", "key", "problem"),
    [
        ({"patterns": {"p": "(unclosed"}}, "selection.content.patterns", "p: not a valid RE2"),
        ({"patterns": {"p": "(?<=BSN )\\d+"}}, "selection.content.patterns", "p: not a valid RE2"),
        ({"patterns": {"p": "(a)\\1"}}, "selection.content.patterns", "p: not a valid RE2"),
        ({"patterns": {"p": "x*"}}, "selection.content.patterns", "matches empty text"),
        ({"patterns": {"p": ""}}, "selection.content.patterns", "empty pattern"),
        ({"bsn": "yes"}, "selection.content.bsn", "expected true or false"),
        ({"scope": ["body"]}, "selection.content.scope[0]", "not one of"),
        ({"ssn": True}, "selection.content.ssn", "unknown key"),
    ],
)
def test_config_errors(tmp_path: Path, content: dict[str, Any], key: str, problem: str) -> None:
    path = tmp_path / "zivmilter.yaml"
    data = {"organization": {"domains": ["hospital.example"]}, "selection": {"content": content}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        config_mod.load(str(path))
    assert caught.value.file == str(path)
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_a_number_written_many_times_counts_once_toward_the_limit() -> None:
    body = "BSN 111222333. " * (defaults.CONTENT_MAX_MATCHES * 2) + "IBAN NL91ABNA0417164300"
    out = explained(config(), eml(body))
    assert [m["rule"] for m in out["selection_matches"]] == ["bsn", "iban"]


@pytest.mark.parametrize("direct", [True, False], ids=["re2-direct", "re2-finditer"])
def test_both_ways_of_reading_re2s_matches_find_the_same(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # content.py reads match spans from google-re2's compiled RE2 when it can (faster), else
    # through the public finditer: every case of the data file finds the same either way.
    monkeypatch.setattr(content, "_DIRECT", direct)
    for case in CASES:
        cfg = config(case.get("content"))
        out = explained(cfg, eml(case["text"]))
        found = [[m["rule"], m["masked"]] for m in out["selection_matches"]]
        assert found == case["found"], case["name"]
