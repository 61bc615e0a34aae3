"""The organization's brand on what a recipient sees (issue 25 part 2): colours checked for
contrast, logos checked for type, size and active content, and the unit a sender belongs to.

Pure: config.py calls the checks while it loads `branding:`; the notification (mail/) and the
portal ask `brand_for` which name, logo, colour and texts a message from a sender carries.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from zivmilter import defaults

DEFAULT_KEY = "default"  # the organization's own brand; units have their own keys
MIN_CONTRAST = 4.5  # WCAG 2.1 AA, 1.4.3 (normal text)
# What the colour is used against: white text on buttons and the header (the card is white too)
# and links on the page's background (portal.css: --card, --bg).
BACKGROUNDS = ("#ffffff", "#f5f7fa")
DEFAULT_COLOR = "#1a5fb4"  # the shipped notification's button

_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_UNIT_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


# --- colours ---------------------------------------------------------------------------------


def parse_color(value: str) -> str:
    """`#1a5fb4`, `1A5FB4` or `#15b` as `#1a5fb4`; ValueError for anything else (names,
    rgb(), alpha: a contrast that depends on what lies behind cannot be checked)."""
    m = _HEX.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"{value!r} is not a colour: give #RRGGBB")
    digits = m.group(1).lower()
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return "#" + digits


def _luminance(color: str) -> float:
    """WCAG 2.1 relative luminance."""
    out = []
    for i in (1, 3, 5):
        c = int(color[i : i + 2], 16) / 255
        out.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = out
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """The WCAG contrast ratio of two colours, 1 to 21."""
    la, lb = _luminance(parse_color(a)), _luminance(parse_color(b))
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def check_color(value: str) -> str:
    """A brand colour that keeps text readable wherever it is used, else ValueError."""
    color = parse_color(value)
    for background in BACKGROUNDS:
        ratio = contrast(color, background)
        if ratio < MIN_CONTRAST:
            raise ValueError(
                f"{color} has a contrast of {ratio:.2f}:1 against {background}"
                f" (white text on it, and links on the page), below {MIN_CONTRAST}:1"
                " (WCAG 2.1 AA): choose a darker colour"
            )
    return color


# --- logos -----------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Logo:
    data: bytes
    content_type: str  # image/png or image/svg+xml
    extension: str  # png or svg
    digest: str  # of the data: a new logo is a new URL (browsers cache the old one)

    def __repr__(self) -> str:
        return f"Logo({self.content_type}, {len(self.data)} bytes)"


_PNG = b"\x89PNG\r\n\x1a\n"
_SVG_NS = "{http://www.w3.org/2000/svg}"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
# Elements that run, embed or load something; an image has no use for them.
_ACTIVE = frozenset(
    {"script", "foreignobject", "iframe", "object", "embed", "audio", "video", "handler",
     "listener", "set", "animate", "animatemotion", "animatetransform"}
)  # fmt: skip


def check_logo(data: bytes) -> Logo:
    """A PNG, or an SVG without active content (no script, event handler, embedded document,
    animation or outside reference), within the size limit; else ValueError. The portal serves
    it as an image under a CSP without scripts as well: this is the second wall."""
    if len(data) > defaults.BRAND_LOGO_MAX_BYTES:
        raise ValueError(
            f"{len(data)} bytes, more than {defaults.BRAND_LOGO_MAX_BYTES}: make the logo smaller"
        )
    digest = hashlib.sha256(data).hexdigest()[:16]
    if data.startswith(_PNG):
        return Logo(data, "image/png", "png", digest)
    _check_svg(data)
    return Logo(data, "image/svg+xml", "svg", digest)


def _check_svg(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("neither a PNG nor an SVG (UTF-8 XML)") from None
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise ValueError("an SVG with a DOCTYPE or entities: remove them")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValueError(f"neither a PNG nor a well-formed SVG ({exc})") from None
    if root.tag not in (_SVG_NS + "svg", "svg"):
        raise ValueError("neither a PNG nor an SVG (the root element is not <svg>)")
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1].lower()
        if tag in _ACTIVE:
            raise ValueError(f"an SVG with <{tag}>: a logo may not run or embed anything")
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            if local.startswith("on"):
                raise ValueError(f"an SVG with an event handler ({local}=): remove it")
            if name in ("href", _XLINK_HREF) and not value.strip().startswith("#"):
                raise ValueError(f"an SVG that refers outside itself (href={value[:40]!r})")
            if "url(" in value and "url(#" not in value.replace(" ", ""):
                raise ValueError(f"an SVG that loads from outside ({local}={value[:40]!r})")
        style = element.text or "" if tag == "style" else ""
        if "@import" in style or "url(" in style:
            raise ValueError("an SVG whose <style> loads from outside: remove @import and url()")


def check_unit_key(key: str) -> str:
    if not _UNIT_KEY.fullmatch(key) or key == DEFAULT_KEY:
        raise ValueError(
            f"{key!r} is no unit name: lower-case letters, digits, - and _ (not {DEFAULT_KEY!r})"
        )
    return key


def check_sender_pattern(value: str) -> str:
    """A unit's sender: a domain (and its subdomains) or an address pattern (`*@x.example`,
    `radiology-*@hospital.example`)."""
    text = value.strip().lower()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{value!r} is neither a domain nor an address pattern")
    return text


# --- the brand of a message --------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    phone: str = ""
    url: str = ""
    address: str = ""

    def __bool__(self) -> bool:
        return bool(self.phone or self.url or self.address)


@dataclass(frozen=True)
class Brand:
    """What a recipient sees of who sent them the message: resolved, nothing left to inherit."""

    key: str
    name: str
    logo: Logo | None = None
    color: str | None = None
    support: Support = Support()
    introduction: Mapping[str, str] = field(default_factory=dict)
    footer: Mapping[str, str] = field(default_factory=dict)

    @property
    def logo_path(self) -> str:
        """Where the portal serves the logo, below its root (portal/app.py's /brand route)."""
        if self.logo is None:
            return ""
        return f"/brand/{self.key}.{self.logo.extension}?v={self.logo.digest}"

    @property
    def css_path(self) -> str:
        """The portal's style sheet with this brand's colour; empty without a colour."""
        if self.color is None:
            return ""
        return f"/brand/{self.key}.css?v={self.color.lstrip('#')}"

    @property
    def accent(self) -> str:
        return self.color or DEFAULT_COLOR

    def intro_text(self, lang: str) -> str:
        return self.introduction.get(lang, "")

    def footer_text(self, lang: str) -> str:
        return self.footer.get(lang, "")


class SupportConfig(Protocol):
    """What config.py's `SupportConfig` gives (config.py imports this module, not the other
    way round)."""

    @property
    def phone(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def address(self) -> str: ...


class Branded(Protocol):
    """What the organization's branding and each unit have in common."""

    @property
    def logo_image(self) -> Logo | None: ...
    @property
    def color(self) -> str | None: ...
    @property
    def support(self) -> SupportConfig | None: ...
    @property
    def introduction(self) -> Mapping[str, str]: ...
    @property
    def footer(self) -> Mapping[str, str]: ...


class UnitConfig(Branded, Protocol):
    @property
    def senders(self) -> tuple[str, ...]: ...
    @property
    def name(self) -> str: ...


class BrandingConfig(Branded, Protocol):
    @property
    def units(self) -> Mapping[str, UnitConfig]: ...


def _support(s: SupportConfig | None) -> Support | None:
    if s is None:
        return None
    return Support(s.phone, s.url, s.address)


def brands(config: BrandingConfig, org_name: str) -> dict[str, Brand]:
    """Every brand of the configuration by key: the organization's, then each unit's, which
    takes what it does not set from the organization's."""
    base = Brand(
        DEFAULT_KEY,
        org_name,
        config.logo_image,
        config.color,
        _support(config.support) or Support(),
        dict(config.introduction),
        dict(config.footer),
    )
    out = {DEFAULT_KEY: base}
    for key, unit in config.units.items():
        out[key] = Brand(
            key,
            unit.name or org_name,
            unit.logo_image or base.logo,
            unit.color or base.color,
            _support(unit.support) or base.support,
            {**base.introduction, **unit.introduction},
            {**base.footer, **unit.footer},
        )
    return out


def unit_for(config: BrandingConfig, sender: str | None) -> str:
    """The key of the first unit whose senders match the address, else DEFAULT_KEY. A pattern
    with @ matches the whole address (shell-style: `*`, `?`); one without, the domain and its
    subdomains."""
    if not sender or not config.units:
        return DEFAULT_KEY
    address = sender.strip().lower()
    domain = address.rpartition("@")[2].rstrip(".")
    for key, unit in config.units.items():
        for pattern in unit.senders:
            if "@" in pattern:
                if fnmatch.fnmatchcase(address, pattern):
                    return key
            elif domain == pattern or domain.endswith("." + pattern):
                return key
    return DEFAULT_KEY
