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
