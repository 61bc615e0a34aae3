"""The notification email a notification recipient receives instead of the message (SPEC 1, 5).

Pure: headers of the original in, a MIME message out; the milter sends it. It carries the
original's From/To/Cc/threading headers, the personal link and how to verify, and nothing of the
body, the attachments, the directive headers, a phone number (masked only) or an access code.
Texts are Jinja2 templates in mail/templates/ (HTML autoescaped), one for all languages: their
words come from the gettext catalogs (zivmilter/i18n.py) in the template's `lang`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
import textwrap
from dataclasses import dataclass
from email import policy
from email._policybase import Compat32
from email.header import Header
from email.message import Message
from email.utils import formatdate, getaddresses, make_msgid, parseaddr, quote
from pathlib import Path
from typing import Literal

import jinja2

from zivmilter import defaults, i18n
from zivmilter.core.branding import Brand
from zivmilter.core.config import Config, NotificationConfig
from zivmilter.core.message import decoded_header

Kind = Literal["account", "sms", "access_code", "email"]

#: Header that marks a notification (harmless to receivers; lets the milter recognize its own).
NOTIFICATION_HEADER = "X-Zivmilter-Notification"

# Headers taken over from the original, in this order. Bcc never: a Bcc recipient stays hidden.
_KEPT = ("From", "Sender", "Reply-To", "To", "Cc", "Date", "In-Reply-To", "References")
_ADDRESS_FIELDS = frozenset({"From", "Sender", "Reply-To", "To", "Cc"})

_TEMPLATES = Path(__file__).parent / "templates"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_FOLDS = re.compile(r"\r?\n[ \t]+")
_LINE_BREAKS = re.compile(r"[ \t]*\r?\n[ \t]*")
# What may not stay in a header value once it is unfolded: line breaks and the characters the
# email package's folding takes for them (vertical tab, form feed, \x1c-\x1e, NEL, U+2028/9).
_BREAKS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]+")
# A line end inside a written field that is no fold (CRLF + space or tab): never written.
_BAD_LINE_END = re.compile(rb"\r(?!\n[ \t])|(?<!\r)\n")
_PLAIN_LINE = re.compile(r"[\t -~]*")
_LINE_END = re.compile(r"\r\n|\r|\n")  # what the generator writes as CRLF


class _Utf8Field(str):
    """A header value written as UTF-8 (RFC 6532): an internationalized address, which
    RFC 2047 may not encode (see _wire_value)."""


class _Wire(Compat32):
    """compat32 with CRLF line ends, and a short cut for the usual header: a value of printable
    ASCII (and tabs) that fits on its line, which compat32's folding leaves exactly as it is
    (tests/test_notification.py proves the two equal), is written without building a `Header`.
    That folding was a third of the time a notification took."""

    def fold_binary(self, name: str, value: str) -> bytes:
        if (
            isinstance(value, str)
            and len(name) + 2 + len(value) <= (self.max_line_length or 78)
            and _PLAIN_LINE.fullmatch(value)
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        if isinstance(value, _Utf8Field):
            return f"{name}: {value}{self.linesep}".encode()
        if type(value) is str and self is _WIRE:
            return _folded(name, value)
        return super().fold_binary(name, value)


_WIRE = _Wire(linesep="\r\n")


@functools.lru_cache(maxsize=64)
def _folded(name: str, value: str) -> bytes:
    """A long field folded once for all the notifications of a message: the original's To and
    Cc, the same in each of them. Folding a To of 100 addresses takes compat32 about 2 ms, and a
    message to 100 recipients has 100 notifications: 0.2 s of the milter's time, quadratic."""
    return Compat32.fold_binary(_WIRE, name, value)


_SMTP = policy.SMTP


@dataclass(frozen=True, repr=False)
class Verification:
    """How the recipient proves who they are. `phone` is the full number: only its mask is shown."""

    kind: Kind
    phone: str | None = None
    hint: str | None = None  # the sender's hint for an access code

    def __repr__(self) -> str:
        return f"Verification(kind={self.kind!r})"


@dataclass(frozen=True, repr=False)
class Draft:
    """A notification's fields and parts, before it is written.

    `message()` builds it with the `email` package's compat32 MIME classes; `wire()` writes the
    same bytes as that message's `as_bytes()` without building it, for the milter's hot path:
    each field is folded by the email package's policy (`_WIRE.fold_binary`, what its generator
    calls), and the parts are laid out as its generator lays out a multipart
    (tests/test_notification.py proves the two equal).
    """

    fields: tuple[tuple[str, str], ...]  # (name, wire value), in order
    parts: tuple[tuple[str, str], ...]  # (subtype, quoted-printable text)
    boundary: str

    def message(self) -> Message:
        msg = Message(policy=_WIRE)
        for name, value in self.fields:
            msg[name] = value
        for subtype, payload in self.parts:
            part = Message(policy=_WIRE)
            for name, value in _part_fields(subtype):
                part[name] = value
            part.set_payload(payload)
            msg.attach(part)
        return msg

    def wire(self) -> bytes:
        fold = _WIRE.fold_binary
        out = [fold(name, value) for name, value in self.fields]
        for field in out:  # the generator's own guard in newer Pythons (gh-121650)
            if _BAD_LINE_END.search(field, 0, len(field) - 2):
                raise ValueError(f"header field would break the header block: {field[:40]!r}")
        out.append(b"\r\n")
        delimiter = b"--" + self.boundary.encode("ascii") + b"\r\n"
        for subtype, payload in self.parts:
            out.append(delimiter)
            out += [fold(name, value) for name, value in _part_fields(subtype)]
            out.append(b"\r\n")
            out.append(_LINE_END.sub("\r\n", payload).encode("ascii"))
            delimiter = b"\r\n" + delimiter
        out.append(b"\r\n--" + self.boundary.encode("ascii") + b"--\r\n")
        return b"".join(out)


def _part_fields(subtype: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Content-Type", f'text/{subtype}; charset="utf-8"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
    )


def draft_notification(
    original: Message,
    *,
    recipient: str,
    link: str,
    verification: Verification,
    language: str,
    subject_mode: Literal["show", "neutral"],
    org_domain: str,
    org_name: str,
    brand: Brand | None = None,
    portal_url: str = "",
    templates: str | None = None,
) -> Draft:
    """The notification for one recipient.

    `brand` (the sender's unit, core/branding.py) gives the name, the logo (served by the portal
    at `portal_url`), the colour and the texts; `templates`, a folder of the site's own
    templates that replace the shipped ones.

    The original's header values are taken over as they were written (already RFC 2047-encoded)
    instead of being parsed and re-folded, which keeps them exact. Non-ASCII values are encoded
    by the email package, never by hand.
    """
    if language not in defaults.LANGUAGES:
        raise ValueError(f"unsupported notification language {language!r}")
    neutral = defaults.NEUTRAL_SUBJECT[language]
    raw_subject = original.get("Subject")
    shown = _clean(decoded_header(raw_subject)) if subject_mode == "show" and raw_subject else ""

    values = {
        "sender": _sender_text(original),
        "subject": shown,
        "neutral": neutral,
        "link": link,
        "kind": verification.kind,
        "phone": mask_phone(verification.phone) if verification.phone else "",
        "hint": _clean(verification.hint or ""),
        "org_name": brand.name if brand else org_name,
        "recipient": recipient,  # for templates; the copy's To/Cc stay as the sender wrote them
        **brand_values(brand, language, portal_url),
    }
    text, html = render_texts(values, language, templates)

    # A random boundary of our own: the generator would otherwise compile a regex per message
    # to prove its boundary absent from the parts (128 random bits cannot collide by chance;
    # nor can "=_" start a quoted-printable line). Short enough for one header line.
    boundary = f"=_zm_{secrets.token_urlsafe(16)}"
    fields = [
        ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ("MIME-Version", "1.0"),
    ]
    kept: dict[str, list[str]] = {name.lower(): [] for name in _KEPT}
    for name, value in original.items():
        found = kept.get(name.lower())
        if found is not None:
            found.append(value)
    for name in _KEPT:
        for value in kept[name.lower()]:
            fields.append((name, _wire_value(name, value)))
    fields.append(("Subject", _wire_value("Subject", raw_subject) if shown else neutral))
    fields.append(("Message-ID", make_msgid(domain=org_domain)))
    if not kept["date"]:
        fields.append(("Date", formatdate(localtime=False, usegmt=True)))
    fields.append((NOTIFICATION_HEADER, "1"))
    fields.append(("Content-Language", language))
    # the stdlib's quoted-printable codec (binascii, in C); written with CRLF line ends
    parts = tuple(
        (subtype, binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii"))
        for body, subtype in ((text, "plain"), (html, "html"))
    )
    return Draft(tuple(fields), parts, boundary)


def notification_for(
    original: Message,
    recipient: str,
    token: str,
    verification: Verification,
    config: Config,
    sender: str | None = None,
    chosen_language: str | None = None,
) -> Draft:
    """`draft_notification` with link, language, subject mode and organization from the
    config, and the brand of `sender` (the author the store keeps; else the From address).
    `chosen_language`: the one the recipient chose in the portal (the contact book), before
    the config's guess by domain."""
    if sender is None:
        sender = parseaddr(decoded_header(original.get("From")))[1]
    return draft_notification(
        original,
        recipient=recipient,
        link=portal_link(config.portal.base_url, token),
        verification=verification,
        language=language_for(recipient, config.notification, chosen_language),
        subject_mode=config.notification.subject,
        org_domain=config.organization.domains[0],
        org_name=config.organization.name,
        brand=config.brand_for(sender),
        portal_url=config.portal.base_url,
        templates=config.branding.templates,
    )


# The encrypted PDF's file name in the mail around it (encryption.pdf), in the recipient's
# language through the catalogs.
PDF_FILENAME = i18n.N_("secure-message.pdf")
_B64_LINE = 76


def pdf_mail(
    original: Message,
    recipient: str,
    pdf: bytes,
    config: Config,
    sender: str | None = None,
) -> bytes:
    """The mail that carries an encrypted PDF (encryption.pdf, issue 26): the original's
    addressing and threading fields, the subject as a notification shows it, a text in the
    recipient's language that says how to open the PDF (template pdf.txt, its words from the
    catalogs; a site's pdf.LANG.txt or pdf.txt first), and the PDF. Nothing of the content
    outside the PDF; never the access code."""
    language = language_for(recipient, config.notification)
    if sender is None:
        sender = parseaddr(decoded_header(original.get("From")))[1]
    brand = config.brand_for(sender)
    raw_subject = original.get("Subject")
    show = config.notification.subject == "show" and raw_subject
    shown = _clean(decoded_header(raw_subject)) if show else ""
    filename = pdf_filename(language)
    values = {
        "sender": _sender_text(original),
        "subject": shown,
        "filename": filename,
        "org_name": brand.name if brand else config.organization.name,
        "recipient": recipient,
        "lang": language,
        **brand_values(brand, language, config.portal.base_url),
    }
    text = _pdf_template(config.branding.templates, language)
    body = binascii.b2a_qp(text.render(values).encode("utf-8"), istext=True).decode("ascii")
    boundary = f"=_zm_{secrets.token_urlsafe(16)}"
    fields = [
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
        ("MIME-Version", "1.0"),
    ]
    for name in _KEPT:
        for value in original.get_all(name, []):
            fields.append((name, _wire_value(name, value)))
    fields.append(("Subject", _wire_value("Subject", raw_subject) if shown else
                   defaults.NEUTRAL_SUBJECT[language]))  # fmt: skip
    fields.append(("Message-ID", make_msgid(domain=config.organization.domains[0])))
    if original.get("Date") is None:
        fields.append(("Date", formatdate(localtime=False, usegmt=True)))
    fields.append(("Content-Language", language))
    fold = _WIRE.fold_binary
    out = [fold(name, value) for name, value in fields]
    for field in out:
        if _BAD_LINE_END.search(field, 0, len(field) - 2):
            raise ValueError(f"header field would break the header block: {field[:40]!r}")
    b64 = base64.b64encode(pdf)
    lines = b"\r\n".join(b64[i : i + _B64_LINE] for i in range(0, len(b64), _B64_LINE))
    delimiter = b"--" + boundary.encode("ascii") + b"\r\n"
    out += [
        b"\r\n",
        delimiter,
        *(fold(n, v) for n, v in _part_fields("plain")),
        b"\r\n",
        _LINE_END.sub("\r\n", body).encode("ascii"),
        b"\r\n" + delimiter,
        fold("Content-Type", f'application/pdf; name="{filename}"'),
        fold("Content-Disposition", f'attachment; filename="{filename}"'),
        b"Content-Transfer-Encoding: base64\r\n\r\n",
        lines,
        b"\r\n--" + boundary.encode("ascii") + b"--\r\n",
    ]
    return b"".join(out)


def pdf_filename(language: str) -> str:
    """The encrypted PDF's file name in `language` (`secure-message.pdf`)."""
    return i18n.translate(language, PDF_FILENAME)


@functools.lru_cache(maxsize=16)
def _pdf_template(folder: str | None, language: str) -> jinja2.Template:
    """The text around an encrypted PDF, found once per process (as `_template`)."""
    return _environment(folder, language).select_template(pdf_template_names(language))


def pdf_template_names(language: str) -> tuple[str, str]:
    """The templates of the text around an encrypted PDF, the first found taken: a site's
    template for one language (`pdf.nl.txt`, as the PDF mail's were before the catalogs), else
    the one for all (`pdf.txt`)."""
    return (f"pdf.{language}.txt", "pdf.txt")


def brand_values(brand: Brand | None, language: str, portal_url: str) -> dict[str, object]:
    """What the notification's templates know of the brand: `logo_url` (absolute: the mail is
    read elsewhere), `accent` (the button's colour), `introduction`, `footer` and `support`."""
    if brand is None:
        return {"logo_url": "", "accent": "#1a5fb4", "introduction": "", "footer": "",
                "support": None}  # fmt: skip
    logo = portal_url.rstrip("/") + brand.logo_path if brand.logo_path else ""
    return {
        "logo_url": logo,
        "accent": brand.accent,
        "introduction": brand.intro_text(language),
        "footer": brand.footer_text(language),
        "support": brand.support if brand.support else None,
    }


def render_texts(
    values: dict[str, object], language: str, templates: str | None = None
) -> tuple[str, str]:
    """The plain-text and HTML parts of a notification (the site's templates first)."""
    values = {**values, "lang": language}
    text = _template(templates, language, "txt").render(values)
    html = _template(templates, language, "html").render(values)
    return text, html


@functools.lru_cache(maxsize=64)
def _template(folder: str | None, language: str, part: str) -> jinja2.Template:
    """The template of a part, found once per process (its environment reads templates once):
    looking for the site's per-language name on every notification was a third of its time."""
    return _environment(folder, language).select_template(template_names(language, part))


def template_names(language: str, part: str) -> tuple[str, str]:
    """The templates of a part, the first found taken: a site's template for one language
    (`notification.nl.txt`, as sites wrote them before the catalogs), else the one for all."""
    return (f"notification.{language}.{part}", f"notification.{part}")


SAMPLE_LINK_TOKEN = "SAMPLE-personal-link-token"
KINDS: tuple[Kind, ...] = ("account", "sms", "access_code", "email")


def sample_values(config: Config, brand: Brand, language: str, kind: Kind) -> dict[str, object]:
    """A notification's template values on sample data (preview, check-config)."""
    return {
        "sender": "Dr. A. Example <a.example@hospital.example>",
        "subject": "Your results",
        "neutral": defaults.NEUTRAL_SUBJECT[language],
        "link": portal_link(config.portal.base_url, SAMPLE_LINK_TOKEN),
        "kind": kind,
        "phone": "+31 6•••••321" if kind == "sms" else "",
        "hint": "the name of your first pet" if kind == "access_code" else "",
        "org_name": brand.name,
        "recipient": "recipient@example.net",
        **brand_values(brand, language, config.portal.base_url),
    }


def template_problems(config: Config) -> list[str]:
    """What is wrong with the notification templates (the site's folder, else the shipped
    ones), each rendered on sample data for every brand, language and verification: a template
    that fails, or one without the personal link (as a link in the HTML part)."""
    problems: list[str] = []
    for brand in config.brands.values():
        for language in defaults.LANGUAGES:
            for kind in KINDS:
                values = sample_values(config, brand, language, kind)
                link = str(values["link"])
                for part in ("txt", "html"):
                    name = f"notification.{language}.{part}"
                    try:
                        env = _environment(config.branding.templates, language)
                        out = env.select_template(template_names(language, part))
                        name = out.name or name
                        rendered = out.render({**values, "lang": language})
                    except jinja2.TemplateSyntaxError as exc:
                        return [f"{exc.filename or name}, line {exc.lineno}: {exc}"]
                    except jinja2.TemplateError as exc:
                        return [f"{name}: cannot be rendered ({type(exc).__name__}: {exc})"]
                    if link in rendered if part == "txt" else f'href="{link}"' in rendered:
                        continue
                    what = "the link" if part == "txt" else 'a link (<a href="{{ link }}">)'
                    problem = f"{name}: the personal link is missing: it must show {what}"
                    if problem not in problems:
                        problems.append(problem)
            problems += [p for p in _pdf_template_problems(config, brand, language)
                         if p not in problems]  # fmt: skip
    return problems


def _pdf_template_problems(config: Config, brand: Brand, language: str) -> list[str]:
    """The text around an encrypted PDF (pdf.txt, or the site's pdf.LANG.txt), rendered on
    sample data."""
    name = f"pdf.{language}.txt"
    values = {
        **sample_values(config, brand, language, "access_code"),
        "filename": pdf_filename(language),
        "lang": language,
    }
    try:
        env = _environment(config.branding.templates, language)
        out = env.select_template(pdf_template_names(language))
        name = out.name or name
        out.render(values)
    except jinja2.TemplateSyntaxError as exc:
        return [f"{exc.filename or name}, line {exc.lineno}: {exc}"]
    except jinja2.TemplateError as exc:
        return [f"{name}: cannot be rendered ({type(exc).__name__}: {exc})"]
    return []


def portal_link(base_url: str, token: str) -> str:
    """The personal link `<base_url>/m/<token>`: the one place that joins them (the portal's
    route for links must match)."""
    return base_url.rstrip("/") + "/m/" + token


def language_for(address: str, config: NotificationConfig, chosen: str | None = None) -> str:
    """The language of a recipient's notification: the one they chose in the portal (the
    contact book), else their domain's (or a parent domain's) in config, else the default."""
    if chosen in defaults.LANGUAGES:
        return chosen
    return domain_language(address, config) or config.language


def domain_language(address: str, config: NotificationConfig) -> str | None:
    """The language notification.languages gives a recipient's domain or a parent domain."""
    labels = address.rpartition("@")[2].lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):
        lang = config.languages.get(".".join(labels[i:]))
        if lang is not None:
            return lang
    return None


# E.164 country codes are prefix-free: 1 and 7 are one digit, these are two, all others three.
_CC2_TABLE = (
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63"
    " 64 65 66 81 82 84 86 90 91 92 93 94 95 98"
)
_CC2 = frozenset(_CC2_TABLE.split())


def mask_phone(number: str) -> str:
    """`+31612345321` -> `+31 6•••••321`: country code, first digit, last three; never more."""
    digits = "".join(c for c in number if c.isdigit())
    if len(digits) < 6:
        return "•" * len(digits)
    cc_len = 1 if digits[0] in "17" else 2 if digits[:2] in _CC2 else 3
    cc, national = digits[:cc_len], digits[cc_len:]
    # Show at most a third of the national number, so that short numbers stay mostly hidden.
    head, tail = (1, 3) if len(national) >= 8 else (0, 2)
    hidden = len(national) - head - tail
    return f"+{cc} {national[:head]}{'•' * hidden}{national[len(national) - tail :]}"


def _wire_value(name: str, value: object) -> str:
    """A header value fit for the wire: ASCII as written, anything else encoded by `email`;
    except an address field naming an internationalized address (RFC 6531: `jörg@…`), which
    RFC 2047 may not encode: it stays UTF-8, as the original had it (RFC 6532). The value is
    unfolded first (RFC 5322 2.2.3): a line break of the original's folding is no part of it;
    any other line break or control character becomes a space (a header value that could end
    its field, or the header block, is an injection)."""
    text = _BREAKS.sub(" ", _FOLDS.sub(" ", str(value))).strip()
    if text.isascii():
        return text
    if name in _ADDRESS_FIELDS:
        pairs = getaddresses([text])
        if any(not a.isascii() for _n, a in pairs):
            return _utf8_addresses(name, pairs)
    try:
        folded = str(_SMTP.fold(name, _SMTP.header_factory(name, text)))
    except Exception:
        # The package's parser of structured fields fails on some broken values, with whatever
        # error (`ß@`: IndexError; `ß :;0`: AttributeError): such a value is encoded as the
        # text it is, never a reason to hold mail.
        folded = ": " + Header(text, "utf-8", header_name=name).encode()
    # One line: the field is folded once, when it is written. (The package's folders can start
    # a continuation line without white space: `sms:\r\n+316…` for a broken address field.)
    return _LINE_BREAKS.sub(" ", folded.split(":", 1)[1]).strip()


def _utf8_addresses(name: str, pairs: list[tuple[str, str]]) -> _Utf8Field:
    """An address field in UTF-8 (RFC 6532), folded between its addresses so that no line
    grows past 78 characters for want of a fold."""
    items = []
    for display, address in pairs:
        if not address:
            continue
        display, address = _clean(display), _clean(address)
        items.append(f'"{quote(display)}" <{address}>' if display else address)
    lines = [""]
    for item in items:
        line = lines[-1]
        if line and len(name) + 2 + len(line) + len(item) + 2 > 78:
            lines[-1] = line + ","
            lines.append(item)
        else:
            lines[-1] = f"{line}, {item}" if line else item
    return _Utf8Field("\r\n ".join(lines))


def _sender_text(original: Message) -> str:
    name, address = parseaddr(decoded_header(original.get("From")))
    if name and address:
        return _clean(f"{name} <{address}>")
    return _clean(address or decoded_header(original.get("From")))


def _clean(text: str) -> str:
    """One line of text: control characters (header injection, template tricks) become spaces."""
    return _CONTROL.sub(" ", text).strip()


@functools.lru_cache(maxsize=16)
def _environment(folder: str | None = None, language: str | None = None) -> jinja2.Environment:
    """The templates: the site's folder (branding.templates) first, then the shipped ones; one
    environment per language, its texts from that language's catalog."""
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(_TEMPLATES))]
    if folder is not None:
        loaders.insert(0, jinja2.FileSystemLoader(folder))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,  # read once per process: no stat() per message
    )
    i18n.install_gettext(env, language)
    env.filters["wordwrap"] = _wordwrap
    return env


@functools.lru_cache(maxsize=256)
def _wordwrap(
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's `wordwrap` (the same arguments and result), remembered: the notification's
    fixed paragraphs are the same few texts in every notification, and textwrap took a fifth
    of a notification's time."""
    sep = "\n" if wrapstring is None else wrapstring
    return sep.join(
        sep.join(
            textwrap.wrap(
                line,
                width=width,
                expand_tabs=False,
                replace_whitespace=False,
                break_long_words=break_long_words,
                break_on_hyphens=break_on_hyphens,
            )
        )
        for line in s.splitlines()
    )
