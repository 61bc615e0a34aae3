"""Content rules over attachments' text (issue 17, scope `attachment_text`), with real files made
here: a PDF written by fpdf2, DOCX, XLSX and ODT written as the ZIP archives of XML they are.
Every case is a row: what the admin sees in `zivmilter scan` (rule, where, masked) or the line
that says an attachment could not be read; the message is handled either way. The time bound is
checked with a reader that never ends: it is stopped, its process gone. A reader that does not
start at all is no attachment's fault: the milter tempfails the message (SPEC 10), never passes
it unread.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import multiprocessing.forkserver
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import Milter
import pytest
import yaml
from fpdf import FPDF
from Milter import testctx

from tests.fakes import make_config
from tests.harness.cli import zivmilter_in_process as zivmilter
from tests.test_milter_adapter import run, use_gateway
from zivmilter.core.attachtext import Unreadable, extract, kind_of
from zivmilter.core.bodytext import attachments_of_message
from zivmilter.core.facts import facts_from_mapping
from zivmilter.errors import ReaderError
from zivmilter.gateway import attachtext
from zivmilter.gateway.attachtext import read_attachments, warm_up
from zivmilter.store import SqliteStore

BSN = "123456782"  # passes the eleven-test
NOT_BSN = "123456789"  # nine digits that fail it
IBAN = "NL91ABNA0417164300"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ODT = "application/vnd.oasis.opendocument.text"


def pdf(*lines: str) -> bytes:
    doc = FPDF()
    doc.add_page()
    doc.set_font("helvetica", size=12)
    for line in lines:
        doc.cell(text=line, new_x="LMARGIN", new_y="NEXT")
    return bytes(doc.output())


def archive(members: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def docx(*paragraphs: str) -> bytes:
    body = "".join(f'<w:p><w:r><w:t xml:space="preserve">{p}</w:t></w:r></w:p>' for p in paragraphs)
    return archive(
        {
            "[Content_Types].xml": "<Types/>",
            "word/document.xml": f"<w:document {W}><w:body>{body}</w:body></w:document>",
        }
    )


def xlsx(strings: list[str], numbers: list[str]) -> bytes:
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    shared = "".join(f"<si><t>{s}</t></si>" for s in strings)
    cells = "".join(f'<c r="B{i}"><v>{n}</v></c>' for i, n in enumerate(numbers, 1))
    return archive(
        {
            "xl/sharedStrings.xml": f"<sst {ns}>{shared}</sst>",
            "xl/worksheets/sheet1.xml": f"<worksheet {ns}><sheetData><row>{cells}</row>"
            "</sheetData></worksheet>",
        }
    )


def odt(*paragraphs: str) -> bytes:
    ns = 'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    body = "".join(f"<text:p>{p}</text:p>" for p in paragraphs)
    return archive(
        {
            "mimetype": "application/vnd.oasis.opendocument.text",
            "content.xml": f"<office:document-content {ns}"
            ' xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0">'
            f"<office:body><office:text>{body}</office:text></office:body>"
            "</office:document-content>",
        }
    )


def bomb() -> bytes:
    """A DOCX whose text member unpacks to 5 MB (the limit here is 1 MB) from a few kB."""
    return archive({"word/document.xml": b"<w:document>" + b" " * 5_000_000 + b"</w:document>"})


def laughs() -> bytes:
    """A DOCX whose XML expands entities a billion times (defusedxml must refuse it)."""
    xml = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        f"<w:document {W}><w:body><w:p><w:r><w:t>&lol2;</w:t></w:r></w:p></w:body></w:document>"
    )
    return archive({"word/document.xml": xml})


# (file name, content type, file, matches as `scan` prints them, or the log's reason)
ROWS: list[tuple[str, str, Callable[[], bytes], list[str], str | None]] = [
    ("verwijzing.pdf", "application/pdf", lambda: pdf("Betreft: mevrouw J. de Vries",
     f"BSN {BSN[:4]}.{BSN[4:6]}.{BSN[6:]}, geboren 12-03-1980"),
     ["bsn in attachment verwijzing.pdf: ****.**.782"], None),
    ("scan.pdf", "application/octet-stream", lambda: pdf(f"referentie {NOT_BSN}",
     "tel 020-5551234, order 2024123456"), [], None),
    ("brief.docx", DOCX, lambda: docx("Geachte collega,", f"BSN {BSN} van de patient."),
     ["bsn in attachment brief.docx: ******782"], None),
    ("brief.docx", "application/octet-stream", lambda: docx(f"nummer {NOT_BSN}"), [], None),
    ("lijst.xlsx", XLSX, lambda: xlsx([f"IBAN {IBAN}"], [BSN]),
     ["iban in attachment lijst.xlsx: ***************300",
      "bsn in attachment lijst.xlsx: ******782"], None),
    # a number in one cell and one in the next do not run on into one number
    ("cellen.xlsx", XLSX, lambda: xlsx([], ["1234", "56782"]), [], None),
    ("brief.odt", ODT, lambda: odt("Geachte collega,",
     f'BSN <text:span>{BSN[:3]} {BSN[3:6]} {BSN[6:]}</text:span>'),
     ["bsn in attachment brief.odt: *** *** 782"], None),
    ("kapot.pdf", "application/pdf", lambda: b"%PDF-1.4\n1 0 obj <<", [], "damaged"),
    ("kapot.docx", DOCX, lambda: b"PK\x03\x04 not really", [], "not a valid ZIP"),
    ("bom.docx", DOCX, bomb, [], "unpacks to"),
    ("lol.docx", DOCX, laughs, [], "refused XML"),
    ("groot.pdf", "application/pdf", lambda: pdf("x") + b"%" * 1_500_000, [],
     "larger than the limit"),
]  # fmt: skip


def message(name: str, ctype: str, data: bytes, text: str = "Zie bijlage.") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = "Verwijzing"
    msg.set_content(text)
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


SELECTION = {
    "mode": "rules",
    "content": {
        "bsn": True,
        "iban": True,
        "payment_card": True,
        "scope": ["subject", "text", "attachment_text"],
        "attachment_max_bytes": 1_000_000,
    },
}


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    cfg = tmp_path / "zivmilter.yaml"
    data = {"organization": {"domains": ["hospital.example"]}, "selection": SELECTION}
    cfg.write_text(yaml.safe_dump(data))
    return str(cfg)


@pytest.mark.parametrize(("name", "ctype", "make", "shown", "problem"), ROWS)
def test_scan_reads_the_attachment_or_says_why_not(
    tmp_path: Path,
    config_file: str,
    name: str,
    ctype: str,
    make: Callable[[], bytes],
    shown: list[str],
    problem: str | None,
) -> None:
    path = tmp_path / "letter.eml"
    path.write_bytes(message(name, ctype, make(), text="Zie bijlage; BSN in de brief."))
    proc = zivmilter("scan", str(path), "--config", config_file)
    assert proc.returncode == (0 if shown else 1), proc.stderr
    assert proc.stdout.splitlines() == (shown or ["no content rule matched"])
    if problem is None:
        assert "not read" not in proc.stderr, proc.stderr
    else:
        # one clear line, naming the attachment by number and type, never by its text
        (line,) = [x for x in proc.stderr.splitlines() if "not read" in x]
        assert line.startswith("zivmilter: attachment 1 (") and problem in line, line
        assert "the message is handled without its text" in line
    assert BSN not in proc.stdout + proc.stderr


def test_explain_shows_where_and_the_masked_match(tmp_path: Path, config_file: str) -> None:
    path = tmp_path / "letter.eml"
    path.write_bytes(message("verwijzing.pdf", "application/pdf", pdf(f"BSN {BSN}")))
    proc = zivmilter("explain", str(path), "--config", config_file, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["selected"] is True
    assert out["selection_matches"] == [
        {"rule": "bsn", "where": "attachment verwijzing.pdf", "masked": "******782"}
    ]
    assert BSN not in proc.stdout


def test_without_the_scope_attachments_are_not_read(tmp_path: Path) -> None:
    cfg = tmp_path / "zivmilter.yaml"
    plain = {**SELECTION, "content": {**SELECTION["content"], "scope": ["subject", "text"]}}  # type: ignore[dict-item]
    cfg.write_text(yaml.safe_dump({"organization": {"domains": ["h.example"]}, "selection": plain}))
    path = tmp_path / "letter.eml"
    path.write_bytes(message("verwijzing.pdf", "application/pdf", pdf(f"BSN {BSN}")))
    proc = zivmilter("scan", str(path), "--config", str(cfg))
    assert proc.returncode == 1 and proc.stdout.strip() == "no content rule matched"


def never_ends(kind: str, data: bytes, limit: int) -> str:
    """A reader stuck in a runaway file (module level: the child process imports it)."""
    while True:
        time.sleep(1)


def test_a_runaway_reader_is_stopped_at_the_time_bound() -> None:
    data = message("loop.pdf", "application/pdf", pdf(f"BSN {BSN}"))
    (att,) = attachments_of_message(data, 1_000_000)
    start = time.monotonic()
    parts, problems = read_attachments([att], 1_000_000, 0.5, extractor=never_ends)
    took = time.monotonic() - start
    assert parts == []
    assert [str(p) for p in problems] == [
        f"attachment 1 (application/pdf, {att.size} bytes) not read for the content rules:"
        " not read within 0.5 s (the reader was stopped); the message is handled without its"
        " text"
    ]
    assert took < 10, took  # the bound, plus starting the reader process
    assert multiprocessing.active_children() == []  # stopped, not left running


def test_the_reader_reads_every_attachment_of_a_message_in_one_child() -> None:
    msg = EmailMessage()
    msg["Subject"] = "twee bijlagen"
    msg.set_content("zie bijlagen")
    msg.add_attachment(pdf("niets"), maintype="application", subtype="pdf", filename="a.pdf")
    msg.add_attachment(docx(f"BSN {BSN}"), maintype="application", subtype="octet-stream",
                       filename="b.docx")  # fmt: skip
    msg.add_attachment(b"GIF89a", maintype="image", subtype="gif", filename="c.gif")
    found = attachments_of_message(msg.as_bytes(), 1_000_000)
    assert [(a.filename, a.kind) for a in found] == [("a.pdf", "pdf"), ("b.docx", "docx")]
    parts, problems = read_attachments(found, 1_000_000, 30)
    assert problems == []
    assert [p.where for p in parts] == ["attachment a.pdf", "attachment b.docx"]
    assert BSN in parts[1].text


@pytest.mark.parametrize(
    ("name", "ctype", "kind"),
    [
        ("a.pdf", "application/pdf", "pdf"),
        ("A.PDF", "application/octet-stream", "pdf"),
        ("a.docx", DOCX, "docx"),
        ("a.xlsx", "application/octet-stream", "xlsx"),
        ("a.ods", "application/octet-stream", "odf"),
        ("a.odt", ODT, "odf"),
        ("a.txt", "text/plain", None),
        ("a", "application/octet-stream", None),
        (None, "image/png", None),
    ],
)
def test_kind_of(name: str | None, ctype: str, kind: str | None) -> None:
    assert kind_of(name, ctype) == kind


def test_extract_raises_unreadable_with_a_reason_only() -> None:
    with pytest.raises(Unreadable) as raised:
        extract("pdf", b"%PDF-1.7\n" + BSN.encode(), 1000)
    assert BSN not in str(raised.value)


def test_milter_handles_a_message_whose_attachment_cannot_be_read(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config({"submission": {"any_address_of_own_domains": True}, "selection": SELECTION})
    use_gateway(store, cfg, facts_from_mapping({}))
    caplog.set_level("INFO", logger="zivmilter")
    data = message("kapot.pdf", "application/pdf", b"%PDF-1.4\n1 0 obj <<", text="Hallo.")
    ctx = testctx.TestCtx()
    assert run(ctx, ["bob@partner.example"], data.replace(b"\n", b"\r\n")) == Milter.ACCEPT
    assert "attachment 1 (application/pdf," in caplog.text and "not read" in caplog.text
    assert not ctx._bodyreplaced  # no rule matched: it passes, as sent


def test_milter_secures_a_message_whose_pdf_carries_a_bsn(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config({"submission": {"any_address_of_own_domains": True}, "selection": SELECTION})
    use_gateway(store, cfg, facts_from_mapping({}))
    caplog.set_level("INFO", logger="zivmilter")
    data = message("verwijzing.pdf", "application/pdf", pdf(f"BSN {BSN}"), text="Hallo.")
    ctx = testctx.TestCtx()
    assert run(ctx, ["bob@partner.example"], data.replace(b"\n", b"\r\n")) in (
        Milter.ACCEPT,
        Milter.DISCARD,
    )
    assert "content rule bsn matched in attachment verwijzing.pdf: ******782" in caplog.text
    assert ctx._bodyreplaced and BSN not in caplog.text


@pytest.fixture
def server_cannot_run() -> Iterator[None]:
    """The reader's process server cannot be run (its Python is gone): a host where the
    forkserver does not start. The running server (shared by the process) is stopped first and
    again after, so that the next reader starts a good one."""
    executable = multiprocessing.spawn.get_executable()
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    attachtext._CONTEXT.set_executable("/nonexistent/python3")
    try:
        yield
    finally:
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
        attachtext._CONTEXT.set_executable(executable)


class EndsTheChild:
    """An extractor the child process ends on as it takes it in, before it is ready (as a reader
    killed at its start would end)."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (os._exit, (3,))


class HoldsTheChild:
    """An extractor the child process hangs on as it takes it in: it is never ready."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (time.sleep, (60,))


@pytest.mark.parametrize("how", ["its server cannot run", "it dies", "it hangs"])
def test_a_reader_that_does_not_start_is_a_fault_not_an_unread_attachment(
    how: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    extractor: Any = extract
    if how == "its server cannot run":
        request.getfixturevalue("server_cannot_run")
    elif how == "it dies":
        extractor = EndsTheChild()
    else:
        extractor = HoldsTheChild()
        monkeypatch.setattr(attachtext, "_START_SECONDS", 1.0)
    data = message("verwijzing.pdf", "application/pdf", pdf(f"BSN {BSN}"))
    (att,) = attachments_of_message(data, 1_000_000)
    # Not a Problem ("handled without its text"): the caller must not go on as if unread.
    with pytest.raises(ReaderError, match="the attachments' text reader"):
        read_attachments([att], 1_000_000, 0.5, extractor=extractor)
    assert multiprocessing.active_children() == []  # stopped, not left running


def test_milter_tempfails_a_message_when_the_reader_cannot_start(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, server_cannot_run: None
) -> None:
    """The BSN is only in the PDF: without its text the message would pass unprotected (with a
    reader, test_milter_secures_a_message_whose_pdf_carries_a_bsn secures it)."""
    cfg = make_config({"submission": {"any_address_of_own_domains": True}, "selection": SELECTION})
    sent = use_gateway(store, cfg, facts_from_mapping({}))
    data = message("verwijzing.pdf", "application/pdf", pdf(f"BSN {BSN}"), text="Hallo.")
    ctx = testctx.TestCtx()
    assert run(ctx, ["bob@partner.example"], data.replace(b"\n", b"\r\n")) == Milter.TEMPFAIL
    code, xcode, text = ctx._reply
    assert (code, xcode) == ("451", "4.3.0"), text  # the MTA keeps it and tries again
    # (refused at its socket, or gone before it was ready: which one comes first varies)
    assert "ReaderError: the attachments' text reader" in caplog.text
    assert not ctx._bodyreplaced and sent.sent == []


def test_scan_says_the_reader_did_not_start_rather_than_no_match(
    tmp_path: Path, config_file: str, server_cannot_run: None
) -> None:
    path = tmp_path / "letter.eml"
    path.write_bytes(message("verwijzing.pdf", "application/pdf", pdf(f"BSN {BSN}")))
    proc = zivmilter("scan", str(path), "--config", config_file)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""  # not "no content rule matched"
    assert proc.stderr.startswith("zivmilter: error: the attachments' text reader"), proc.stderr


def test_warm_up_says_at_start_that_the_reader_does_not_start(
    caplog: pytest.LogCaptureFixture, server_cannot_run: None
) -> None:
    warm_up()
    assert "the attachments' text reader" in caplog.text
    assert "messages with attachments to read are tempfailed until it starts" in caplog.text
