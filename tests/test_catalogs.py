"""The gettext catalogs (zivmilter/locale/) against the messages of the code and the templates, as
`pybabel extract -F babel.cfg` finds them: a message a language lacks, a fuzzy or empty one, one
whose placeholders differ from the English, or one the code no longer has, fails here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from zivmilter import defaults, i18n

ROOT = Path(__file__).resolve().parent.parent
# %(name)s of gettext's python-format (templates), {name} of str.format (portal/i18n.py)
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")

Message = str | tuple[str, str]


def extracted() -> dict[Message, str]:
    """msgid (or singular, plural) -> where it is, for every message of babel.cfg's map."""
    with (ROOT / "babel.cfg").open() as fp:
        method_map, options_map = parse_mapping_cfg(fp)  # type: ignore[no-untyped-call]
    found: dict[Message, str] = {}
    for filename, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=DEFAULT_KEYWORDS
    ):
        key: Message = message if isinstance(message, str) else (message[0], message[1])
        found.setdefault(key, filename)
    return found


def placeholders(text: str) -> set[str]:
    return {a or b for a, b in _PLACEHOLDER.findall(text)}


def problems(catalog: Catalog, messages: Iterable[Message], source: bool = False) -> list[str]:
    """What is wrong with `catalog` for `messages`; `source`: the English one, whose empty
    translations mean the msgid itself."""
    wanted = set(messages)
    out: list[str] = []
    for msgid in sorted(wanted, key=str):
        entry = catalog.get(msgid if isinstance(msgid, str) else msgid[0])
        if entry is None or entry.id != msgid:
            out.append(f"missing: {msgid!r}")
            continue
        if entry.fuzzy:
            out.append(f"fuzzy: {msgid!r}")
        if source:
            continue
        raw = entry.string if isinstance(entry.string, (tuple, list)) else (entry.string,)
        strings = tuple(str(text or "") for text in raw)
        ids = msgid if isinstance(msgid, tuple) else (msgid,)
        if not all(strings):
            out.append(f"untranslated: {msgid!r}")
            continue
        expected = placeholders(ids[-1])
        for text in strings:
            if placeholders(text) != expected:
                found = sorted(placeholders(text))
                out.append(f"placeholders {found} != {sorted(expected)}: {text!r}")
    for entry in catalog:
        if entry.id and entry.id not in wanted:
            out.append(f"not in the code or templates any more: {entry.id!r}")
    return out


def read(language: str) -> Catalog:
    path = i18n.LOCALE_DIR / language / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
    with path.open("rb") as fp:
        return read_po(fp, locale=language, domain=i18n.DOMAIN)


@pytest.fixture(scope="module")
def messages() -> dict[Message, str]:
    return extracted()


def test_the_code_and_templates_have_messages(messages: dict[Message, str]) -> None:
    sources = set(messages.values())
    assert any(s.endswith("notification.html") for s in sources)
    assert any(s.endswith("i18n.py") for s in sources)
    assert "Secure email" in messages and ("%(num)d minute", "%(num)d minutes") in messages


@pytest.mark.parametrize("language", defaults.LANGUAGES)
def test_every_catalog_has_every_message_with_its_placeholders(
    language: str, messages: dict[Message, str]
) -> None:
    assert problems(read(language), messages, source=language == "en") == []


def test_a_missing_message_or_placeholder_is_found() -> None:
    catalog = Catalog(locale="de")
    catalog.add("Hello %(name)s", "Hallo %(nom)s")
    catalog.add(("%(num)d day", "%(num)d days"), ("%(num)d Tag", ""))
    catalog.add("Gone", "Weg")
    catalog.add("Later {when}", "Später", flags=("fuzzy",))
    found = problems(
        catalog, ["Hello %(name)s", ("%(num)d day", "%(num)d days"), "New", "Later {when}"]
    )
    assert sorted(found) == sorted(
        [
            "placeholders ['nom'] != ['name']: 'Hallo %(nom)s'",
            "untranslated: ('%(num)d day', '%(num)d days')",
            "fuzzy: 'Later {when}'",
            "placeholders [] != ['when']: 'Später'",
            "missing: 'New'",
            "not in the code or templates any more: 'Gone'",
        ]
    )


def test_a_built_package_reads_the_compiled_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What setup.py's build writes (.mo next to the .po) is what a package reads; without it,
    the .po through Babel (a checkout): both say the same."""
    from babel.messages.mofile import write_mo

    folder = tmp_path / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    catalog = read("de")
    catalog.get("Secure email").string = "COMPILED"  # type: ignore[union-attr]
    with (folder / f"{i18n.DOMAIN}.mo").open("wb") as fp:
        write_mo(fp, catalog)
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        assert i18n.translate("de", "Secure email") == "COMPILED"
        assert i18n.translate("nl", "Secure email") == "Secure email"  # no catalog: the source
    finally:
        monkeypatch.undo()
        i18n.translations.cache_clear()
    assert i18n.translate("de", "Secure email") == "Sichere E-Mail"
