"""What the portal shows of a message: MIME structure, sanitized HTML, names; and that every text
exists in every language (zivmilter/portal/render.py, i18n.py, mail.py)."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from zivmilter.portal import i18n, mail, render

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\nbinary \x00\x01\x02 end\n"
PNG = b"\x89PNG\r\n\x1a\nfake image bytes"


def rich_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dr. Alice <alice@hospital.example>"
    msg["To"] = "bob@example.net"
    msg["Subject"] = "Röntgen results"
    msg["Message-ID"] = "<rich@hospital.example>"
    msg.set_content("Plain alternative")
    msg.add_alternative(
        '<p onclick="steal()">Hello <img src="cid:logo@h"> <img src="https://tracker.example/t.gif">'
        "<script>document.title='pwned'</script></p>",
        subtype="html",
    )
    html = msg.get_body(("html",))
    assert html is not None
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo@h>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="résults 2026.pdf")
    msg.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="../../etc/passwd")
    return msg.as_bytes(policy=policy.SMTP)


def test_parse_finds_body_inline_image_and_attachments() -> None:
    msg, view = render.parse(rich_message())
    assert view.subject == "Röntgen results"
    assert view.sender == "Dr. Alice <alice@hospital.example>"
    assert view.text is not None and view.text.strip() == "Plain alternative"
    assert view.html is not None and "Hello" in view.html
    assert list(view.inline) == ["logo@h"]
    names = [a.filename for a in view.attachments]
    assert names == ["résults 2026.pdf", "_.._etc_passwd"]  # no path, no leading dot
    pdf = view.attachments[0]
    assert pdf.content_type == "application/pdf" and pdf.size == len(PDF)
    leaves = render.leaves(msg)
    assert render.leaf_payload(leaves[pdf.index]) == PDF
    assert render.leaf_payload(leaves[view.inline["logo@h"]]) == PNG


def test_plain_message_and_nameless_parts() -> None:
    raw = (
        b"From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain; charset=x-unknown-charset\r\n\r\nhello\r\n"
        b"--B\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
        b"--B--\r\n"
    )
    msg, view = render.parse(raw)
    assert view.html is None and view.text is not None and "hello" in view.text
    assert [a.filename for a in view.attachments] == ["attachment-2.png", "message.eml"]
    inner = render.leaf_payload(render.leaves(msg)[view.attachments[1].index])
    assert b"Subject: inner" in inner and b"inner body" in inner


@pytest.mark.parametrize("root", ["", "/portal", "/a&b"])
def test_a_kept_view_frames_the_html_as_sanitizing_it_again_would(root: str) -> None:
    """The frame of a kept view serves the HTML sanitized when the view was kept: byte for
    byte what sanitizing it for this recipient's part URLs gives (or, for a prefix that would
    need escaping, nothing kept: the frame sanitizes then)."""
    _, view = render.parse(rich_message())
    assert view.html is not None
    data = render.view_to_bytes(view)
    assert data is not None
    kept = render.view_from_bytes(data)
    assert kept is not None and kept.inline_mark not in view.html
    parts = f"{root}/r/7/part/"

    def inline_url(cid: str) -> str | None:
        index = view.inline.get(cid)
        return None if index is None else f"{parts}{index}"

    framed = render.framed_html(kept, parts)
    if "&" in root:
        assert framed is None
        return
    assert framed == render.sanitize_html(view.html, inline_url).html
    assert f'src="{parts}{view.inline["logo@h"]}"' in framed and "tracker.example" not in framed
    assert render.framed_html(view, parts) is None  # a view just parsed keeps nothing yet


def test_sanitized_html_has_nothing_active_and_no_remote_loads() -> None:
    _, view = render.parse(rich_message())
    assert view.html is not None
    safe = render.sanitize_html(view.html, lambda cid: "/r/1/part/2" if cid == "logo@h" else None)
    assert "<script" not in safe.html and "pwned" not in safe.html
    assert "onclick" not in safe.html and "steal" not in safe.html
    assert 'src="/r/1/part/2"' in safe.html
    assert "tracker.example" not in safe.html and safe.blocked == 1
    consented = render.sanitize_html(view.html, lambda cid: None, allow_remote=True)
    assert 'src="https://tracker.example/t.gif"' in consented.html and consented.blocked == 0


@pytest.mark.parametrize(
    ("dirty", "forbidden"),
    [
        ('<a href="javascript:alert(1)">x</a>', "javascript"),
        ("<img src=x onerror=alert(1)>", "onerror"),
        ('<iframe src="https://evil.example"></iframe>', "iframe"),
        ('<form action="https://evil.example"><input name=p></form>', "form"),
        ("<svg><script>alert(1)</script></svg>", "script"),
        ('<p style="background:url(https://evil.example/x)">x</p>', "evil"),
        ('<p style="position:fixed;top:0">x</p>', "position"),
        ("<style>body{background:url(https://evil.example)}</style>", "evil"),
        ('<meta http-equiv="refresh" content="0;url=https://evil.example">', "refresh"),
        ('<img src="/r/2/part/1">', "/r/2"),  # relative URLs would use the reader's cookies
        ('<a href="/r/2/logout">x</a>', "/r/2"),
        ('<base href="https://evil.example/">', "base"),
        ('<object data="https://evil.example/x.swf"></object>', "object"),
    ],
)
def test_sanitizer_table(dirty: str, forbidden: str) -> None:
    assert forbidden not in render.sanitize_html(dirty, lambda cid: None).html


def test_sanitizer_keeps_formatting() -> None:
    html = (
        '<table border="1" cellpadding="4"><tr><td style="color: #c00; font-weight: bold">'
        '<font color="blue">x</font></td></tr></table><a href="https://ok.example/">ok</a>'
    )
    out = render.sanitize_html(html, lambda cid: None).html
    assert 'style="color:#c00;font-weight:bold"' in out.replace(" ", "").replace(';"', '"')
    assert '<font color="blue">' in out and 'cellpadding="4"' in out
    assert 'href="https://ok.example/"' in out and 'rel="noopener noreferrer nofollow"' in out
    assert 'target="_blank"' in out


def test_clean_filename() -> None:
    assert render.clean_filename("a/b\\c:d*e?.pdf") == "a_b_c_d_e_.pdf"
    assert render.clean_filename("evil\r\nX-Header: 1.txt") == "evil X-Header_ 1.txt"
    assert render.clean_filename("...") == ""
    # a right-to-left override would show "invoice\u202efdp.exe" as "invoiceexe.pdf"
    assert render.clean_filename("invoice\u202efdp.exe") == "invoicefdp.exe"
    assert render.clean_filename("a\u200bb\u2028c.txt") == "ab c.txt"


@pytest.mark.parametrize("language", ["nl", "de"])
def test_every_text_exists_in_every_language(language: str) -> None:
    cat = i18n.catalogue()
    assert set(cat) == {"en", "nl", "de"}
    assert set(cat["en"]) == set(cat[language])
    same = {"nl": {"h_cc", "download_button"}, "de": {"h_cc"}}[language]
    for key, text in cat["en"].items():
        fields_en = set(re.findall(r"\{(\w+)\}", text))
        assert fields_en == set(re.findall(r"\{(\w+)\}", cat[language][key])), key
        assert cat[language][key] != text or key in same, key


@pytest.mark.parametrize("language", ["en", "nl", "de"])
def test_mails_in_every_language(language: str) -> None:
    code = mail.code_email(
        to="s@x.example", code="123456", sender_text="alice@hospital.example",
        language=language, org_name="Hospital", org_domain="hospital.example",
    )  # fmt: skip
    parsed = message_from_bytes(code.as_bytes(), policy=policy.default)
    assert parsed["Subject"] == i18n.texts(language)["code_mail_subject"]
    assert parsed["From"].addresses[0].addr_spec == "noreply@hospital.example"
    assert parsed["Auto-Submitted"] == "auto-generated"
    body = parsed.get_body(("plain",))
    assert body is not None and "123456" in body.get_content()
    sms = mail.sms_text(code="654321", sender_text="alice@hospital.example", language=language)
    assert "654321" in sms and "\n" not in sms and len(sms) <= 160
    reply = mail.reply_email(
        author="bob@example.net", to="alice@hospital.example", subject="Results",
        in_reply_to="<m1@h>", references="", sent="2026-11-24", text="Thanks, Alice",
        files=[mail.ReplyFile("a.txt", "text/plain", b"file")], language=language,
        org_name="Hospital", org_domain="hospital.example",
    )  # fmt: skip
    r = message_from_bytes(reply.as_bytes(), policy=policy.default)
    assert r["Subject"] == "Re: Results" and r["In-Reply-To"] == "<m1@h>"
    assert r["Reply-To"] == "bob@example.net" and r["To"] == "alice@hospital.example"
    text = r.get_body(("plain",))
    assert text is not None and "Thanks, Alice" in text.get_content()
    assert [p.get_filename() for p in r.iter_attachments()] == ["a.txt"]
