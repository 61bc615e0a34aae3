"""The languages of what recipients and senders read: gettext catalogs and the locale's formats.

The catalogs are zivmilter/locale/<language>/LC_MESSAGES/zivmilter.po (Babel: `pybabel
extract/update/compile`, README: Translations); a build compiles them to .mo next to them
(setup.py), and a checkout without the .mo files reads the .po through Babel instead, so
development needs no compile step. Dates, times and sizes are written by babel.dates and
babel.numbers in the language's conventions, in the organization's time zone.

The portal (portal/i18n.py, its templates) and the notification (mail/notification.py) take
their texts from here; `install_gettext` gives a Jinja2 environment `_()`, `ngettext()` and
`{% trans %}` that follow the language of the template's own context (`lang`).
"""

from __future__ import annotations

import functools
import gettext as _gettext
import io
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale
from babel.dates import format_date, format_datetime, get_date_format, get_datetime_format
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations
from markupsafe import Markup

from zivmilter import defaults

DOMAIN = "zivmilter"
LOCALE_DIR = Path(__file__).parent / "locale"
# The locale whose conventions a language's dates and numbers follow: British English writes
# the day first and a 24-hour clock, as the organizations this serves do.
FORMAT_LOCALES = {"en": "en_GB", "nl": "nl_NL", "de": "de_DE"}


def N_(message: str) -> str:  # the name pybabel extracts by default
    """Marks a message for extraction where it is defined; translated where it is shown."""
    return message


@functools.cache
def translations(language: str) -> _gettext.NullTranslations:
    """The catalog of `language`: its compiled .mo, else its .po read by Babel (a checkout);
    none (the English of the source) for a language without one."""
    folder = LOCALE_DIR / language / "LC_MESSAGES"
    mo = folder / f"{DOMAIN}.mo"
    if mo.is_file():
        with mo.open("rb") as fp:
            return Translations(fp, domain=DOMAIN)
    po = folder / f"{DOMAIN}.po"
    if not po.is_file():
        return _gettext.NullTranslations()
    with po.open("rb") as fp:
        catalog = read_po(fp, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def translate(language: str, message: str) -> str:
    """`message` (a msgid) in `language` (named apart from gettext's keywords, so that pybabel
    takes only the literal messages of the code)."""
    return translations(language).gettext(message)


def install_gettext(env: jinja2.Environment, language: str | None = None) -> None:
    """`_`, `gettext`, `ngettext` and `{% trans %}` in `env`'s templates (newstyle:
    placeholders are `%(name)s`, values escaped in HTML): in `language`, or, without one, in
    the language of each render's `lang` (one environment for every language: the portal)."""
    env.add_extension("jinja2.ext.i18n")

    @jinja2.pass_context
    def _gettext_in(context: jinja2.runtime.Context, message: str) -> str:
        return translations(_language(context)).gettext(message)

    @jinja2.pass_context
    def _ngettext_in(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
        return translations(_language(context)).ngettext(singular, plural, n)

    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_gettext_in, ngettext=_ngettext_in, newstyle=True
    )
    if language is None:
        return
    # One language for the environment (the notification, once per recipient): the same
    # newstyle calls as jinja2.ext's, without a context lookup per message (half its time).
    catalog = translations(language)

    @functools.cache
    def _translated(message: str, escape: bool) -> str:
        rv = catalog.gettext(message)
        return Markup(rv) if escape else rv

    @jinja2.pass_eval_context
    def _gettext(eval_ctx: jinja2.nodes.EvalContext, message: str, **variables: Any) -> str:
        return _translated(message, eval_ctx.autoescape) % variables

    @jinja2.pass_eval_context
    def _ngettext(
        eval_ctx: jinja2.nodes.EvalContext, singular: str, plural: str, num: int, **variables: Any
    ) -> str:
        variables.setdefault("num", num)
        rv = catalog.ngettext(singular, plural, num)
        if eval_ctx.autoescape:
            rv = Markup(rv)
        return rv % variables

    env.globals.update(_=_gettext, gettext=_gettext, ngettext=_ngettext)


def _language(context: jinja2.runtime.Context) -> str:
    lang = context.get("lang")
    return lang if isinstance(lang, str) else defaults.NOTIFICATION_LANGUAGE


# --- formats ---------------------------------------------------------------------------------


def format_locale(language: str) -> Locale:
    return Locale.parse(FORMAT_LOCALES.get(language, language))


@functools.cache
def zone(name: str) -> tzinfo:
    """organization.timezone as a tzinfo (the config checked the name)."""
    return UTC if name == "UTC" else ZoneInfo(name)


def format_timestamp(when: datetime, language: str, zone_name: str = defaults.TIMEZONE) -> str:
    """A moment as the language writes a date and time (medium date, 24-hour clock), in the
    organization's zone, with the zone's abbreviation: `24 Nov 2026, 10:00 CET`."""
    locale = format_locale(language)
    local = when.astimezone(zone(zone_name))
    date_pattern = get_date_format("medium", locale=locale).pattern
    pattern = str(get_datetime_format("medium", locale=locale))
    pattern = pattern.replace("{1}", date_pattern).replace("{0}", "HH:mm")
    return f"{format_datetime(local, pattern, locale=locale)} {local.strftime('%Z')}"


def format_long_date(when: datetime, language: str, pattern: str) -> str:
    """A date in a CLDR `pattern` (a translated message: the order of weekday, day, month and
    year is the language's), names of days and months in the language."""
    return format_date(when, pattern, locale=format_locale(language))


def format_size(size: int, language: str) -> str:
    """Bytes as the language writes them: `48 B`, `47.1 KB` (en), `47,1 KB` (nl, de)."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KB"
    for unit in ("KB", "MB", "GB"):  # where the loop stops is the unit shown
        value = size / 1024
        if value < 1024 or unit == "GB":
            break
        size = int(value)
    return f"{format_decimal(value, '0.0', locale=format_locale(language))} {unit}"
