"""The encrypted PDF as a recipient opens it: qpdf decrypts it with the access code (and with no
other), pdftotext reads the text a PDF reader shows, qpdf extracts the embedded attachments."""

from __future__ import annotations

import shutil
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from zivmilter.mail.pdf import encrypted_pdf

CODE = "K7QX-93PL-ZZ2M"
CANARY = "CANARY-PDF-5521"
BINARY = bytes(range(256)) * 40  # every byte value, so nothing is re-encoded on the way
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} missing: scripts/install installs it (Debian: qpdf, poppler-utils)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True, timeout=60, check=False)


def _decrypt(pdf: bytes, tmp_path: Path, password: str = CODE) -> Path:
    src, out = tmp_path / "in.pdf", tmp_path / "plain.pdf"
    src.write_bytes(pdf)
    done = _run(_tool("qpdf"), f"--password={password}", "--decrypt", str(src), str(out))
    assert done.returncode == 0, done.stderr.decode()
    return out


def _text(plain: Path) -> str:
    done = _run(_tool("pdftotext"), "-enc", "UTF-8", str(plain), "-")
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode("utf-8")


def _attachment(plain: Path, name: str) -> bytes:
    done = _run(_tool("qpdf"), f"--show-attachment={name}", str(plain))
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Jörg Müller <joerg@example.de>"
    msg["To"] = "Zoë de Vries <zoe@example.nl>"
    msg["Date"] = "Mon, 07 Dec 2026 12:00:00 +0100"
    msg["Subject"] = "Überweisung für das Café"
    msg.set_content(f"Grüße aus Köln! Één, twee, drie; ijsbeer.\n\n{CANARY}\n\nMet groet\n")
    msg.add_alternative("<p>the HTML alternative is not printed</p>", subtype="html")
    msg.add_attachment(BINARY, maintype="application", subtype="octet-stream", filename="data.bin")
    msg.add_attachment(b"second", maintype="text", subtype="plain", filename="notes.txt")
    msg.add_attachment(b"third", maintype="text", subtype="plain", filename="notes.txt")
    return msg


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return encrypted_pdf(bytes(_message()), CODE)


def test_opens_with_the_access_code_and_reads_as_the_message(pdf: bytes, tmp_path: Path) -> None:
    plain = _decrypt(pdf, tmp_path)
    text = _text(plain)
    assert CANARY in text
    for word in ("Jörg Müller", "Zoë de Vries", "Überweisung für das Café", "Grüße aus Köln",
                 "Één, twee, drie", "data.bin", "notes (2).txt"):  # fmt: skip
        assert word in text, word
    assert "HTML alternative" not in text
    assert "message.txt" not in text  # DejaVu shows all of it: no copy of the text needed


def test_attachments_are_embedded_byte_for_byte(pdf: bytes, tmp_path: Path) -> None:
    plain = _decrypt(pdf, tmp_path)
    assert _attachment(plain, "data.bin") == BINARY
    assert _attachment(plain, "notes.txt") == b"second"
    assert _attachment(plain, "notes (2).txt") == b"third"


def test_wrong_or_no_password_does_not_open_it(pdf: bytes, tmp_path: Path) -> None:
    src = tmp_path / "in.pdf"
    src.write_bytes(pdf)
    for args in (["--password=K7QX-93PL-ZZ2N"], []):
        done = _run(_tool("qpdf"), *args, "--decrypt", str(src), str(tmp_path / "out.pdf"))
        assert done.returncode == 2 and b"invalid password" in done.stderr


def test_aes_256_and_nothing_readable_without_the_code(pdf: bytes, tmp_path: Path) -> None:
    src = tmp_path / "in.pdf"
    src.write_bytes(pdf)
    shown = _run(_tool("qpdf"), f"--password={CODE}", "--show-encryption", str(src)).stdout
    assert b"R = 6" in shown and b"AESv3" in shown  # AES-256, security handler revision 6
    assert b"Supplied password is user password" in shown  # the owner password is another
    assert CANARY.encode() not in pdf and BINARY[:256] not in pdf and b"notes" not in pdf


def test_html_only_message_is_reduced_to_its_text_and_keeps_its_images(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["Subject"] = "HTML"
    msg.set_content(
        "<html><head><style>p { color: red }</style><script>var secret = 1;</script></head>\n"
        "<body><p>First   paragraph,\n   <b>bold</b> word.</p><p>" + CANARY + "</p>"
        '<p>See <a href="https://example.org/a?b=1&amp;c=2">our <i>site</i></a>.</p>'
        "<ul><li>one</li><li>two</li></ul>"
        '<img src="cid:logo@x"></body></html>',
        subtype="html",
    )
    msg.add_related(IMAGE, maintype="image", subtype="png", cid="<logo@x>", filename="logo.png")
    plain = _decrypt(encrypted_pdf(bytes(msg), CODE), tmp_path)
    text = _text(plain)
    assert "First paragraph, bold word." in text and CANARY in text
    assert "See our site (https://example.org/a?b=1&c=2)." in text
    assert "• one" in text and "• two" in text
    assert "color" not in text and "secret" not in text and "<p>" not in text
    assert _attachment(plain, "logo.png") == IMAGE


def test_an_empty_access_code_is_refused() -> None:
    with pytest.raises(ValueError, match="password"):
        encrypted_pdf(bytes(_message()), "")


def test_long_lines_and_words_are_wrapped_within_the_page() -> None:
    from fpdf import FPDF

    from zivmilter.mail.pdf import FONT_DIR, _wrap

    pdf = FPDF(format="A4")
    pdf.add_font("DejaVu", "", f"{FONT_DIR}/DejaVuSans.ttf")
    pdf.set_font("DejaVu", "", 11)
    text = "Zie https://example.org/" + "ä" * 400 + " en " + "woord " * 60 + "\n\nEinde"
    lines = _wrap(pdf, text, 120)
    assert all(pdf.get_string_width(line) <= 120 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    assert lines[0] == "Zie" and lines[-2:] == ["", "Einde"]


def test_characters_the_font_lacks_are_not_lost(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "李 <li@example.cn>"
    msg["Subject"] = "会议"
    msg.set_content(f"请查收附件。\n{CANARY}\n")
    plain = _decrypt(encrypted_pdf(bytes(msg), CODE), tmp_path)
    assert "the whole text is attached: message.txt" in _text(plain)
    kept = _attachment(plain, "message.txt").decode("utf-8")
    assert "李 <li@example.cn>" in kept and "会议" in kept and "请查收附件。" in kept


def test_html_white_space_collapses_except_in_pre() -> None:
    from zivmilter.mail.pdf import _html_to_text

    html = "<p>a   b\n   c</p><pre>def f():\n    return   1</pre><p>d&nbsp;&nbsp;e</p>"
    assert _html_to_text(html).strip("\n").split("\n") == [
        "a b c", "", "def f():", "    return   1", "", "d\xa0\xa0e",
    ]  # fmt: skip


def test_headers_encoded_or_raw_utf8_read_as_text(tmp_path: Path) -> None:
    raw = (
        "From: =?iso-8859-1?q?J=F6rg_M=FCller?= <joerg@example.de>\r\n"
        "To: Zoë <zoe@example.nl>\r\n"  # raw UTF-8, as an SMTPUTF8 client sends it
        "Subject: =?utf-8?b?w5xiZXJ3ZWlzdW5n?=\r\n"
        "\r\n"
        f"{CANARY}\r\n"
    ).encode()
    text = _text(_decrypt(encrypted_pdf(raw, CODE), tmp_path))
    for shown in ("Jörg Müller <joerg@example.de>", "Zoë <zoe@example.nl>", "Überweisung", CANARY):
        assert shown in text, shown


def test_the_font_subsetting_logs_nothing_of_the_content(
    pdf: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # the milter logs at INFO: what fontTools says there names the glyphs of secured text
    with caplog.at_level("INFO"):
        encrypted_pdf(_message().as_bytes(), CODE)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("fontTools")] == []


# --- the fonts, parsed once per process (mail/pdffonts.py) ------------------------------------


def _opened(pdf: bytes) -> tuple[str, set[str]]:
    """What a reader of the PDF gets with the access code: its text (pypdf), and the characters
    its embedded font subsets have glyphs for (each font file's own cmap, fontTools)."""
    import io

    from fontTools.ttLib import TTFont
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(pdf))
    assert reader.decrypt(CODE)
    text = "\n".join(page.extract_text() for page in reader.pages)
    glyphs: set[str] = set()
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            cid_font = font.get_object()["/DescendantFonts"][0].get_object()
            embedded = cid_font["/FontDescriptor"]["/FontFile2"].get_object().get_data()
            glyphs |= {chr(c) for c in TTFont(io.BytesIO(embedded)).getBestCmap()}
    return text, glyphs


def _letter(subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["Subject"] = subject
    msg.set_content(body)
    return bytes(msg)


GREEK = ("Ωμέγα", "Γειά σου Κόσμε, ψυχή")  # characters the Dutch letter has none of
DUTCH = ("Overmaken", "Één ijsbeer, drie cafés")


def test_two_pdfs_one_after_the_other_each_carry_their_own_text_and_glyphs_only() -> None:
    from zivmilter.mail.pdf import labels

    first = encrypted_pdf(_letter(*GREEK), CODE, labels=labels("de"))
    second = encrypted_pdf(_letter(*DUTCH), CODE, labels=labels("nl"))
    first_text, first_glyphs = _opened(first)
    second_text, second_glyphs = _opened(second)
    assert "Betreff: Ωμέγα" in first_text and GREEK[1] in first_text
    assert "Onderwerp: Overmaken" in second_text and DUTCH[1] in second_text
    # exactly the glyphs each one shows (and the space every subset keeps), none of the other's
    assert first_glyphs - {" "} == set(first_text) - set(" \n")
    assert second_glyphs - {" "} == set(second_text) - set(" \n")
    assert not {"Ω", "ψ", "Κ"} & second_glyphs and "Ω" not in second_text
    assert not {"É", "j", "é"} & first_glyphs


def test_pdfs_made_at_once_in_threads_each_carry_their_own_text_and_glyphs_only() -> None:
    import concurrent.futures
    import threading

    letters = [GREEK, DUTCH, ("Grüße", "Straße in Köln"), ("Привет", "Добрый день")] * 3
    start = threading.Barrier(len(letters))

    def make(letter: tuple[str, str]) -> bytes:
        start.wait()
        return encrypted_pdf(_letter(*letter), CODE)

    with concurrent.futures.ThreadPoolExecutor(len(letters)) as pool:
        pdfs = list(pool.map(make, letters))
    for (subject, body), pdf in zip(letters, pdfs, strict=True):
        text, glyphs = _opened(pdf)
        assert f"Subject: {subject}" in text and body in text
        assert glyphs - {" "} == set(text) - set(" \n"), subject


@pytest.mark.parametrize(
    "text",
    ["AV To Ty Wa fi ﬁ: kerning pairs, a ligature", "Grüße aus Köln", "Ωμέγα — Привет — 请"],
)
def test_fonts_parsed_once_make_the_pdf_fpdf2_makes_from_the_font_files(text: str) -> None:
    """The same bytes, subsets included, as a document whose fonts fpdf2 reads from their files
    itself; the second of two documents too (the parsed fonts reused)."""
    import datetime
    import os

    from fpdf import FPDF

    from zivmilter.mail.pdf import _FONTS, FONT_DIR, _document

    def written(pdf: FPDF) -> bytes:
        pdf.set_creation_date(datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC))
        pdf.add_page()
        for style in _FONTS:
            pdf.set_font("DejaVu", style, 11)
            pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
        return bytes(pdf.output())

    plain = FPDF(format="A4")
    plain.set_margins(20, 20, 20)
    plain.set_auto_page_break(True, margin=20)
    plain.set_creator("zivmilter")
    for style, file in _FONTS.items():
        plain.add_font("DejaVu", style, os.path.join(FONT_DIR, file))
    expected = written(plain)
    assert written(_document(FONT_DIR)) == expected
    assert written(_document(FONT_DIR)) == expected


def test_the_parsed_fonts_are_left_as_they_were_by_the_pdfs_made_from_them() -> None:
    """What the milter's threads share is never written: a PDF made in one thread cannot change
    one being made in another (an ordering too rare to catch by racing them)."""
    from zivmilter.mail import pdffonts

    encrypted_pdf(_letter(*GREEK), CODE)
    before = {
        key: (len(p.font.cw), p.font.desc.__dict__.copy()) for key, p in pdffonts._PARSED.items()
    }
    assert before  # the fonts of the PDF above
    encrypted_pdf(_letter("Ωμέγα", "龘, Привет"), CODE)  # 龘: no other test has it; no glyph
    for key, parsed in pdffonts._PARSED.items():
        font = parsed.font
        assert (len(font.cw), font.desc.__dict__) == before[key]  # no width added, not numbered
        assert font.missing_glyphs == [] and len(font.subset) <= 2  # .notdef and space only
        assert font.biggest_size_pt == 0
