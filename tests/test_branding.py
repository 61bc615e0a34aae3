"""Branding (issue 25 part 2): what check-config refuses (low contrast, a bad logo, a template
without the personal link), which unit a sender gets, and the notification and pages that
`zivmilter preview` writes in each unit's name and logo."""

from __future__ import annotations

import email
import shutil
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from zivmilter import defaults
from zivmilter.cli import main
from zivmilter.core import branding, config
from zivmilter.errors import ConfigError
from zivmilter.mail import notification

DATA = Path(__file__).parent / "data" / "branding"

CONFIG = """\
organization: {domains: [hospital.example], name: St. Example Hospital}
portal: {base_url: "https://secure.hospital.example/"}
branding:
  logo: logo.png
  color: "#14507a"
  support: {phone: "+31 20 555 0100", url: "https://hospital.example/help"}
  introduction: {en: "A message from your hospital.", nl: "Een bericht van uw ziekenhuis."}
  footer: {en: "St. Example Hospital, 1 Example Road"}
  units:
    radiology:
      name: Example Radiology
      logo: radiology.svg
      color: "#5a2d82"
      senders: [radiology.hospital.example, "xray-*@hospital.example"]
"""


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    for name in ("logo.png", "radiology.svg"):
        shutil.copy(DATA / name, tmp_path / name)
    path = tmp_path / "zivmilter.yaml"
    path.write_text(text)
    return path


# --- what the configuration refuses ----------------------------------------------------------


@pytest.mark.parametrize(
    ("color", "ok"),
    [("#14507a", True), ("#595959", True), ("#1a5fb4", True),
     ("#767676", False),  # 4.54:1 on white, but 4.23:1 for a link on the page's #f5f7fa
     ("#777777", False), ("#ffcc00", False), ("red", False)],
)  # fmt: skip
def test_low_contrast_is_refused_naming_key_and_file(tmp_path: Path, color: str, ok: bool) -> None:
    path = write_config(tmp_path, CONFIG.replace('color: "#5a2d82"', f'color: "{color}"'))
    if ok:
        assert config.load(str(path)).brands["radiology"].color == color
        return
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert info.value.file == str(path)
    assert info.value.key == "branding.units.radiology.color"


def test_contrast_is_wcags() -> None:
    assert branding.contrast("#000000", "#ffffff") == pytest.approx(21)
    assert round(branding.contrast("#767676", "#ffffff"), 2) == 4.54


def test_check_config_says_which_key_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, CONFIG.replace('color: "#14507a"', 'color: "#8899aa"'))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: branding.color: #8899aa has a contrast of" in err
    assert "below 4.5:1" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "<script>"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "event handler"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><foreignObject/></svg>", "<foreignobject>"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><image href='https://x.example/a.png'/></svg>",
         "refers outside"),
        (b"<!DOCTYPE svg [<!ENTITY a 'b'>]><svg/>", "DOCTYPE"),
        (b"GIF89a....", "neither a PNG nor"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * defaults.BRAND_LOGO_MAX_BYTES, "make the logo smaller"),
    ],
)  # fmt: skip
def test_a_bad_logo_is_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    path = write_config(tmp_path)
    (tmp_path / "radiology.svg").write_bytes(content)
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert info.value.key == "branding.units.radiology.logo"
    assert problem in info.value.problem


def test_a_template_without_the_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    shipped = Path(notification.__file__).parent / "templates" / "notification.html"
    text = shipped.read_text().replace('href="{{ link }}"', 'href="https://hospital.example/"')
    (folder / "notification.nl.html").write_text(text)
    path = write_config(tmp_path, CONFIG + "  templates: templates\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: branding.templates: notification.nl.html: the personal link is missing" in err
    assert "notification.en" not in err


def test_a_template_that_fails_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "verify.html").write_text('{% extends "base.html" %}{% block main %}{{ nope.x }}')
    path = write_config(tmp_path, CONFIG + "  templates: templates\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "branding.templates:" in err and "verify.html" in err


def test_a_site_template_replaces_the_shipped_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "notification.en.txt").write_text("Open {{ link }} ({{ org_name }})\n")
    path = write_config(tmp_path, CONFIG + "  templates: templates\n")
    assert main(["check-config", str(path)]) == 0
    capsys.readouterr()
    assert main(["preview", "notification", "--text", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        out == "Open https://secure.hospital.example/m/SAMPLE-personal-link-token"
        " (St. Example Hospital)\n"
    )


# --- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "unit"),
    [("a@radiology.hospital.example", "radiology"), ("a@ct.radiology.hospital.example",
     "radiology"), ("xray-3@hospital.example", "radiology"), ("XRAY-3@Hospital.Example",
     "radiology"), ("a@hospital.example", "default"), ("a@xradiology.hospital.example",
     "default"), ("", "default")],
)  # fmt: skip
def test_the_unit_of_a_sender(tmp_path: Path, sender: str, unit: str) -> None:
    cfg = config.load(str(write_config(tmp_path)))
    assert cfg.brand_for(sender).key == unit


def test_a_unit_takes_what_it_leaves_out_from_the_organization(tmp_path: Path) -> None:
    cfg = config.load(str(write_config(tmp_path)))
    unit = cfg.brands["radiology"]
    assert unit.name == "Example Radiology"
    assert unit.logo is not None and unit.logo.content_type == "image/svg+xml"
    assert unit.support.phone == "+31 20 555 0100"
    assert unit.intro_text("nl") == "Een bericht van uw ziekenhuis."


# --- what the recipient gets -----------------------------------------------------------------


def _original(sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Dr. Example <{sender}>"
    msg["To"] = "patient@example.net"
    msg["Subject"] = "Your results"
    return msg


@pytest.mark.parametrize(
    ("sender", "name", "logo"),
    [("xray-1@hospital.example", "Example Radiology", "/brand/radiology.svg?v="),
     ("ward@hospital.example", "St. Example Hospital", "/brand/default.png?v=")],
)  # fmt: skip
def test_the_notification_carries_the_units_brand(
    tmp_path: Path, sender: str, name: str, logo: str
) -> None:
    cfg = config.load(str(write_config(tmp_path)))
    draft = notification.notification_for(
        _original(sender), "patient@example.net", "T0KEN", notification.Verification("email"), cfg
    )
    msg = email.message_from_bytes(draft.wire(), policy=policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert f'<img src="https://secure.hospital.example{logo}' in html
    assert f'alt="{name}"' in html
    assert f"Sent through the secure email of {name}." in text
    assert "A message from your hospital." in text
    assert "phone: +31 20 555 0100" in text
    assert "St. Example Hospital, 1 Example Road" in html
    color = cfg.brand_for(sender).color
    assert f"background: {color};" in html


def test_preview_writes_each_units_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    out = tmp_path / "page.html"
    argv = ["preview", "portal", "message", "--unit", "radiology", "--lang", "nl"]
    assert main([*argv, "--config", str(path), "-o", str(out)]) == 0
    page = out.read_text()
    assert '<html lang="nl">' in page
    assert '<span class="org">Example Radiology</span>' in page
    assert 'src="/brand/radiology.svg?v=' in page
    assert 'href="/brand/radiology.css?v=5a2d82"' in page
    assert main(["preview", "portal", "verify-sms", "--config", str(path)]) == 0
    assert '<span class="org">St. Example Hospital</span>' in capsys.readouterr().out
    assert main(["preview", "portal", "x", "--unit", "nope", "--config", str(path)]) == 2
    assert "no unit 'nope' (units: radiology)" in capsys.readouterr().err


def test_a_pdf_mail_template_that_fails_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the text around an encrypted PDF (encryption.pdf) is checked like the notifications
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "pdf.en.txt").write_text("{{ sender }} sent {{ no_such_value }}\n")
    path = write_config(tmp_path, CONFIG + "  templates: templates\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pdf.en.txt: cannot be rendered (UndefinedError" in err
    assert "pdf.nl.txt" not in err


def test_a_site_pdf_mail_template_replaces_the_shipped_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # pdf.txt for every language (its words from the catalogs), pdf.LANG.txt for one
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "pdf.txt").write_text('{{ _("Subject") }}: {{ filename }} ({{ org_name }})\n')
    (folder / "pdf.nl.txt").write_text("Open {{ filename }} met uw code.\n")
    languages = "notification: {languages: {example.nl: nl, example.de: de}}\n"
    path = write_config(tmp_path, CONFIG + "  templates: templates\n" + languages)
    assert main(["check-config", str(path)]) == 0
    cfg = config.load(str(path))
    texts = {}
    for recipient in ("p@example.net", "p@example.nl", "p@example.de"):
        wire = notification.pdf_mail(_original("ward@hospital.example"), recipient, b"%PDF", cfg)
        text, _pdf = email.message_from_bytes(wire, policy=policy.default).iter_parts()
        texts[recipient] = text.get_content()  # type: ignore[attr-defined]
    assert texts == {
        "p@example.net": "Subject: secure-message.pdf (St. Example Hospital)\r\n",
        "p@example.nl": "Open beveiligd-bericht.pdf met uw code.\r\n",
        "p@example.de": "Betreff: sichere-nachricht.pdf (St. Example Hospital)\r\n",
    }
