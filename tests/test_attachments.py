"""Large attachments of direct copies become links; everything else stays as written."""

from __future__ import annotations

import io
from email import message_from_bytes, policy
from email.message import EmailMessage

from zivmilter.mail.attachments import replace_large


def message(*attachments: tuple[str, bytes]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@x.example"
    msg["Subject"] = "s"
    msg.set_content("hello")
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def test_small_messages_are_left_alone() -> None:
    saved: list[str] = []
    src = io.BytesIO(message(("a.bin", b"x" * 1000)))
    assert replace_large(src, 10_000, lambda n, t, d: saved.append(n) or "L") is None
    assert saved == []


def test_only_the_large_attachment_is_replaced() -> None:
    big, small = bytes(range(256)) * 400, b"tiny"
    kept: dict[str, bytes] = {}

    def save(name: str, ctype: str, data: bytes) -> str:
        kept[name] = data
        return "https://portal.example/d/TOKEN"

    result = replace_large(
        io.BytesIO(message(("big.bin", big), ("small.bin", small))), 50_000, save
    )
    assert result is not None
    data, replaced = result
    assert kept == {"big.bin": big}  # decoded bytes, exactly
    assert [(r.filename, r.size) for r in replaced] == [("big.bin", len(big))]
    out = message_from_bytes(data, policy=policy.default)
    assert [p.get_filename() for p in out.walk() if p.get_filename()] == ["small.bin"]
    notices = [p.get_content() for p in out.walk() if p.get_content_type() == "text/plain"]
    assert any("big.bin" in n and "https://portal.example/d/TOKEN" in n for n in notices)
    assert len(data) < 10_000
    assert out["Subject"] == "s"


def test_nested_multipart() -> None:
    inner = message(("deep.bin", b"y" * 80_000))
    outer = EmailMessage()
    outer["Subject"] = "fwd"
    outer.set_content("see attached")
    outer.add_attachment(message_from_bytes(inner, policy=policy.default))
    names: list[str] = []
    result = replace_large(
        io.BytesIO(outer.as_bytes()), 50_000, lambda n, t, d: names.append(n) or "L"
    )
    assert result is not None and names == ["deep.bin"]


def test_single_part_message_is_never_parsed_whole() -> None:
    msg = EmailMessage()
    msg["Subject"] = "big text"
    msg.set_content("x" * 200_000)
    assert replace_large(io.BytesIO(msg.as_bytes()), 50_000, lambda n, t, d: "L") is None


def test_a_disguised_name_is_kept_and_shown_without_its_format_characters() -> None:
    # "invoice\u202efdp.exe" displays as "invoiceexe.pdf": the override goes, the name stays.
    kept: list[str] = []
    result = replace_large(
        io.BytesIO(message(("invoice\u202efdp.exe", b"z" * 60_000))),
        50_000,
        lambda name, ctype, data: kept.append(name) or "https://portal.example/d/T",
    )
    assert result is not None and kept == ["invoicefdp.exe"]
    assert "\u202e" not in result[0].decode("utf-8", "replace")
    assert [r.filename for r in result[1]] == ["invoicefdp.exe"]
