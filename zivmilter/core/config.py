"""Configuration: one YAML file, read once with a strict `yaml.safe_load` (duplicate keys refused),
validated into frozen objects.

The schema *is* the dataclasses below: the walker in yamlschema.py checks every key against their
type hints, so an unknown key or a bad value is an error naming the file and the key path.
Defaults come from defaults.py. Relative paths are taken relative to the config file's folder.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from zivmilter import defaults
from zivmilter.core import branding as _branding
from zivmilter.core import keys as _keys
from zivmilter.core.addresses import normalize_address, normalize_domain
from zivmilter.core.content import compile_pattern
from zivmilter.core.levels import Level
from zivmilter.core.yamlschema import FieldProblem, Invalid, build, read_yaml
from zivmilter.errors import ConfigError

_re_password = re.compile(r"(?:^|\s)password\s*=")

# ---------------------------------------------------------------------------------------------
# Value checks, attached to fields as metadata["check"]; they raise ValueError with the problem.


def _domain(value: str) -> str:
    return normalize_domain(value)


def _domain_list(values: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        d = normalize_domain(v)
        if d not in out:
            out.append(d)
    return tuple(out)


def _required_domain_list(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:  # the one key without a default: an empty list is no answer either
        raise ValueError("required: list at least one domain")
    return _domain_list(values)


def _address_or_domain_list(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for v in values:
        out.append(normalize_address(v) if "@" in v else normalize_domain(v))
    return tuple(out)


def _address(value: str) -> str:
    return normalize_address(value)


def _address_list(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(normalize_address(v) for v in values)


def _networks(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not a network (CIDR, e.g. 192.0.2.0/24)") from None
    return values


def _socket(value: str) -> str:
    if value.startswith("unix:") or value.startswith("local:") or value.startswith("/"):
        path = value.split(":", 1)[1] if ":" in value else value
        if not path.startswith("/"):
            raise ValueError(f"{value!r}: a unix socket needs an absolute path (unix:/PATH)")
        return value
    if value.startswith("inet:") or value.startswith("inet6:"):
        port = value.split(":", 1)[1].split("@", 1)[0]
        if port.isdigit() and 0 < int(port) < 65536:
            return value
    raise ValueError(f"{value!r} is not a milter socket (unix:/PATH or inet:PORT@HOST)")


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


def _resolvers(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        host, _, port = v.partition("@")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{v!r} is not a resolver address (IP or IP@PORT)") from None
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{v!r}: {port!r} is not a port")
    return values


def _port(value: int) -> int:
    if not 0 < value < 65536:
        raise ValueError(f"{value} is not a TCP port")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"{value} must be greater than 0")
    return value


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"{value} must not be negative")
    return value


def _device_days(value: int) -> int:
    if not 0 <= value <= defaults.REMEMBER_DEVICE_MAX_DAYS:
        raise ValueError(f"{value} is not 0 (off) to {defaults.REMEMBER_DEVICE_MAX_DAYS} days")
    return value


def _url(value: str) -> str:
    if not (value.startswith("https://") or value.startswith("http://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _timezone(value: str) -> str:
    """An IANA time zone name (organization.timezone): the dates the portal and its mail show."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        problem = f"{value!r} is not an IANA time zone name (like Europe/Amsterdam)"
        raise ValueError(problem) from None
    return value


def _url_list(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        _url(v)
    return values


def _languages(values: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for dom, lang in values.items():
        if lang not in defaults.LANGUAGES:
            raise ValueError(f"{dom}: {lang!r} is not one of {', '.join(defaults.LANGUAGES)}")
        out[normalize_domain(dom)] = lang
    return out


def _logins(values: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {login: _address_or_domain_list(v) for login, v in values.items()}


def _patterns(values: Mapping[str, str]) -> dict[str, str]:
    for name, source in values.items():
        try:
            compile_pattern(source)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return dict(values)


def _dsn(value: str) -> str:
    """A libpq connection string or URI, which must not carry a password: that belongs in a
    password file (PGPASSFILE, ~/.pgpass or store.password_file), not in the configuration."""
    text = value.strip()
    if not text:
        raise ValueError("empty: give a libpq connection string or postgresql:// URI")
    if text.startswith(("postgresql://", "postgres://")):
        rest = text.split("://", 1)[1]
        userinfo = rest.split("@", 1)[0] if "@" in rest.split("/", 1)[0] else ""
        query = rest.split("?", 1)[1] if "?" in rest else ""
        if ":" in userinfo or any(p.split("=", 1)[0] == "password" for p in query.split("&")):
            raise ValueError(_NO_PASSWORD)
    elif _re_password.search(text):
        raise ValueError(_NO_PASSWORD)
    return text


_NO_PASSWORD = (
    "the DSN holds a password: remove it and put it in a password file"
    " (PGPASSFILE, ~/.pgpass or store.password_file)"
)


def _check(fn: Callable[[Any], Any], doc: str = "") -> Any:
    return {"check": fn, "doc": doc}


# ---------------------------------------------------------------------------------------------
# The schema.


@dataclass(frozen=True)
class OrganizationConfig:
    domains: tuple[str, ...] = field(metadata=_check(_required_domain_list, "our own domains"))
    name: str = "Example Organization"
    nta7516: bool = False
    # From of the mail zivmilter writes in its own name (the DSN, the portal's code mail and
    # replies): at an organization domain, so the organization's DKIM signer signs it and it
    # aligns with DMARC. None: MAILER-DAEMON@ (DSN) and noreply@ (portal) the first domain.
    mail_from: str | None = field(default=None, metadata=_check(_address, "our own sender"))
    # The zone of the dates and times the portal and its mail show (babel.dates, per language).
    # UTC unless set: a gateway's system zone is often UTC anyway, and a setting says it plainly.
    timezone: str = field(
        default=defaults.TIMEZONE, metadata=_check(_timezone, "IANA time zone name")
    )

    def __post_init__(self) -> None:
        if self.mail_from is not None:
            domain = self.mail_from.rpartition("@")[2]
            if domain not in self.domains:
                problem = (
                    f"{self.mail_from!r} is not at an organization domain"
                    f" ({', '.join(self.domains)}): its DKIM signature would not align"
                )
                raise Invalid("organization.mail_from", problem)

    @property
    def dsn_from(self) -> str:
        """The DSN's From: MAILER-DAEMON, as every MTA signs its reports, at our own domain."""
        return self.mail_from or f"{defaults.DSN_MAIL_FROM}@{self.domains[0]}"

    @property
    def portal_from(self) -> str:
        """From and envelope sender of the portal's code mail and secure replies."""
        return self.mail_from or f"{defaults.PORTAL_MAIL_FROM}@{self.domains[0]}"


@dataclass(frozen=True)
class OddConfig:
    domains: tuple[str, ...] = field(default=(), metadata=_check(_domain_list))
    lists: tuple[str, ...] = field(default=(), metadata=_check(_url_list))


@dataclass(frozen=True)
class MethodsConfig:
    sms: bool = True
    access_code: bool = True
    # Interactive use only: submitted mail always keeps email verification as last resort.
    email_verification: bool = True
    # Days a recipient's browser, once ticked after an SMS or emailed code, opens later links
    # for the same address without a code (issue 25); 0: never offered
    remember_device_days: int = field(
        default=defaults.REMEMBER_DEVICE_DAYS, metadata=_check(_device_days)
    )


@dataclass(frozen=True)
class PolicyConfig:
    transport_security_compliance: Level = Level.NONE
    outbound_direct_delivery: OddConfig = OddConfig()
    methods: MethodsConfig = MethodsConfig()
    expiry_days: int = field(default=defaults.EXPIRY_DAYS, metadata=_check(_not_negative))
    large_attachment_bytes: int = field(
        default=defaults.LARGE_ATTACHMENT_BYTES, metadata=_check(_positive)
    )


@dataclass(frozen=True)
class Nta7516Config:
    """Admins' own lists of NTA 7516 compliant recipient domains, and exclusions."""

    domains: tuple[str, ...] = field(default=(), metadata=_check(_domain_list))
    exclude: tuple[str, ...] = field(default=(), metadata=_check(_domain_list))


@dataclass(frozen=True)
class IddConfig:
    """Domains of organizations with inbound direct delivery enabled."""

    domains: tuple[str, ...] = field(default=(), metadata=_check(_domain_list))


@dataclass(frozen=True)
class MilterConfig:
    # postfix: direct copies are routed by header (milter_header_checks); sendmail: every
    # direct copy goes through the re-injection relay, which must enforce TLS itself
    mta: Literal["postfix", "sendmail"] = "postfix"
    socket: str = field(default=defaults.MILTER_SOCKET, metadata=_check(_socket))
    timeout: int = field(default=defaults.MILTER_TIMEOUT, metadata=_check(_positive))
    spool_threshold: int = field(default=defaults.SPOOL_THRESHOLD, metadata=_check(_positive))
    max_message_bytes: int = field(default=defaults.MAX_MESSAGE_BYTES, metadata=_check(_positive))


@dataclass(frozen=True)
class StoreConfig:
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: str = field(default=defaults.STORE_PATH, metadata={"path": True})  # sqlite
    key_file: str = field(default=defaults.STORE_KEY_FILE, metadata={"path": True})
    # During a key rotation: the older key files the store still reads (never writes with);
    # `zivmilter status --keys` says when one can go (README "Key rotation")
    previous_key_files: tuple[str, ...] = field(default=(), metadata={"path": True})
    # postgresql: a libpq connection string or URI without a password; the password comes
    # from password_file (a libpq passfile) or else PGPASSFILE / ~/.pgpass
    dsn: str = field(default="", metadata=_check(_dsn))
    password_file: str | None = field(default=None, metadata={"path": True})
    pool_size: int = field(default=defaults.STORE_POOL_SIZE, metadata=_check(_positive))

    def __post_init__(self) -> None:
        if self.backend == "postgresql" and not self.dsn:
            raise FieldProblem("dsn", "required with backend postgresql")
        if self.backend == "sqlite" and self.dsn:
            raise FieldProblem("dsn", "only for backend postgresql (backend is sqlite)")
        if self.key_file in self.previous_key_files:
            raise FieldProblem("previous_key_files", "names store.key_file, the current key")
        if len(set(self.previous_key_files)) != len(self.previous_key_files):
            raise FieldProblem("previous_key_files", "names a key file twice")


@dataclass(frozen=True)
class ReinjectConfig:
    host: str = defaults.REINJECT_HOST
    port: int = field(default=defaults.REINJECT_PORT, metadata=_check(_port))
    timeout: float = field(default=defaults.REINJECT_TIMEOUT, metadata=_check(_positive))
    # the portal's secure replies: a listener with the site's content filters (on `host`)
    replies_port: int = field(default=defaults.REINJECT_REPLIES_PORT, metadata=_check(_port))


@dataclass(frozen=True)
class ReplyLimitsConfig:
    """Quotas of secure replies: per link, and per recipient address over all its links."""

    link_per_hour: int = field(default=defaults.REPLY_LINK_PER_HOUR, metadata=_check(_positive))
    link_per_day: int = field(default=defaults.REPLY_LINK_PER_DAY, metadata=_check(_positive))
    link_bytes_per_hour: int = field(
        default=defaults.REPLY_LINK_BYTES_PER_HOUR, metadata=_check(_positive)
    )
    link_bytes_per_day: int = field(
        default=defaults.REPLY_LINK_BYTES_PER_DAY, metadata=_check(_positive)
    )
    recipient_per_hour: int = field(
        default=defaults.REPLY_RECIPIENT_PER_HOUR, metadata=_check(_positive)
    )
    recipient_per_day: int = field(
        default=defaults.REPLY_RECIPIENT_PER_DAY, metadata=_check(_positive)
    )
    recipient_bytes_per_hour: int = field(
        default=defaults.REPLY_RECIPIENT_BYTES_PER_HOUR, metadata=_check(_positive)
    )
    recipient_bytes_per_day: int = field(
        default=defaults.REPLY_RECIPIENT_BYTES_PER_DAY, metadata=_check(_positive)
    )
    # the store's file system keeps at least this much free: replies are refused below it
    min_free_bytes: int = field(
        default=defaults.REPLY_MIN_FREE_BYTES, metadata=_check(_not_negative)
    )


@dataclass(frozen=True)
class PortalConfig:
    base_url: str = field(default=defaults.PORTAL_BASE_URL, metadata=_check(_url))
    listen: str = field(default=defaults.PORTAL_LISTEN, metadata=_check(_host_port))
    workers: int = field(default=defaults.PORTAL_WORKERS, metadata=_check(_positive))
    session_seconds: int = field(
        default=defaults.PORTAL_SESSION_SECONDS, metadata=_check(_positive)
    )
    max_reply_bytes: int = field(
        default=defaults.PORTAL_MAX_REPLY_BYTES, metadata=_check(_positive)
    )
    reply_limits: ReplyLimitsConfig = ReplyLimitsConfig()


@dataclass(frozen=True)
class SmsWebhookConfig:
    url: str = ""
    # e.g. "Authorization: Bearer TOKEN"; sent as it is
    auth_header: str | None = None
    # JSON body, a Jinja2 template with {{ phone }} and {{ text }} (JSON-escaped by the sender)
    body: str = '{"to": {{ phone }}, "text": {{ text }}}'
    timeout: float = field(default=10.0, metadata=_check(_positive))


@dataclass(frozen=True)
class SmsConfig:
    # file: codes are appended to `file` (development); webhook: POSTed to an SMS provider
    backend: Literal["file", "webhook"] = "file"
    file: str = field(default="/var/lib/zivmilter/sms-outbox.log", metadata={"path": True})
    webhook: SmsWebhookConfig = SmsWebhookConfig()


@dataclass(frozen=True)
class NotificationConfig:
    subject: Literal["show", "neutral"] = "show"
    language: Literal["en", "nl", "de"] = "en"
    # recipient domain -> language; the default language serves every other domain
    languages: dict[str, str] = field(default_factory=dict, metadata=_check(_languages))
    # mail the sender once when a recipient first opens a message (no content in it; issue 19)
    read_receipts: bool = False


@dataclass(frozen=True)
class SmimeConfig:
    # PEM bundle of the CAs whose S/MIME certificates the organization accepts; without one no
    # S/MIME certificate is trusted (only OpenPGP keys are used)
    trust_store: str | None = field(default=None, metadata={"path": True})

    def __post_init__(self) -> None:
        if self.trust_store is None:
            return
        try:
            with open(self.trust_store, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise FieldProblem(
                "trust_store", f"{self.trust_store}: cannot read: {exc.strerror or exc}"
            ) from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise FieldProblem("trust_store", f"{self.trust_store}: no PEM certificate in it")


@dataclass(frozen=True)
class WkdConfig:
    # PEM bundle of the CAs a WKD server's certificate must chain to; None: the system's CAs
    ca_file: str | None = field(default=None, metadata={"path": True})
    # a WKD answer larger than this is refused (a key, not a keyring)
    max_bytes: int = field(default=defaults.WKD_MAX_BYTES, metadata=_check(_positive))


def _sources(values: tuple[_keys.KeySource, ...]) -> tuple[_keys.KeySource, ...]:
    if len(set(values)) != len(values):
        raise ValueError("names a source twice")
    return values


@dataclass(frozen=True)
class EncryptionConfig:
    """Encryption to the recipient's own key (issue 26); off: the seeds' behaviour."""

    enabled: bool = False
    # where keys are looked for, in this order; the first trusted key wins
    sources: tuple[_keys.KeySource, ...] = field(
        default=tuple(_keys.KeySource), metadata=_check(_sources)
    )
    cache_ttl: int = field(default=defaults.KEY_CACHE_TTL, metadata=_check(_positive))
    # seconds one network lookup (WKD, OPENPGPKEY, SMIMEA) may take in all
    lookup_timeout: float = field(default=defaults.KEY_LOOKUP_TIMEOUT, metadata=_check(_positive))
    wkd: WkdConfig = WkdConfig()
    # also encrypt each encrypted copy to the sender's own key (when one is trusted)
    copy_to_sender: bool = False
    smime: SmimeConfig = SmimeConfig()
    # a recipient the sender gave an access code (zivver-access-right) gets the message as an
    # AES-256 PDF that opens with that code, instead of a notification (SPEC-ADDITIONS 3b)
    pdf: bool = False
    # a larger message (header and body as the MTA passes them) is not made into a PDF: the
    # recipient keeps the portal (the PDF is built in memory, in the milter's thread)
    pdf_max_bytes: int = field(default=defaults.PDF_MAX_BYTES, metadata=_check(_positive))
    # more text than this (the body the PDF lays out, decoded, UTF-8) is not made into a PDF
    # either: laying out text is what costs the milter's thread seconds, not attachments
    pdf_max_text_bytes: int = field(default=defaults.PDF_MAX_TEXT_BYTES, metadata=_check(_positive))


@dataclass(frozen=True)
class TransportConfig:
    # Resolver addresses ("IP" or "IP@PORT"); empty: the system's resolv.conf.
    resolver: tuple[str, ...] = field(default=(), metadata=_check(_resolvers))
    smtp_port: int = field(default=defaults.SMTP_PORT, metadata=_check(_port))
    timeout: float = field(default=defaults.PROBE_TIMEOUT, metadata=_check(_positive))
    domain_budget: float = field(default=defaults.PROBE_DOMAIN_BUDGET, metadata=_check(_positive))
    ca_file: str | None = field(default=None, metadata={"path": True})
    cache_ttl_success: int = field(default=defaults.CACHE_TTL_SUCCESS, metadata=_check(_positive))
    cache_ttl_failure: int = field(default=defaults.CACHE_TTL_FAILURE, metadata=_check(_positive))


@dataclass(frozen=True)
class SubmissionRules:
    trusted_networks: tuple[str, ...] = field(
        default=defaults.TRUSTED_NETWORKS, metadata=_check(_networks)
    )
    # SMTP AUTH login -> addresses or domains it may send as
    logins: dict[str, tuple[str, ...]] = field(default_factory=dict, metadata=_check(_logins))
    spf: bool = True
    any_address_of_own_domains: bool = False


@dataclass(frozen=True)
class SubmissionConfig(SubmissionRules):
    # Rules of their own for some MTA listeners, by the name Postfix passes as {daemon_name}
    # (master.cf: -o milter_macro_daemon_name=NAME); every other listener uses the keys above.
    listeners: dict[str, SubmissionRules] = field(default_factory=dict)


ContentScope = Literal["subject", "text", "attachment_names", "attachment_text"]


@dataclass(frozen=True)
class ContentConfig:
    """Content rules (content.py): built-in detectors, the site's own RE2 patterns, and where
    to look."""

    bsn: bool = False
    bsn_require_context: bool = False  # only a BSN within reach of one of the words below
    bsn_context_words: tuple[str, ...] = defaults.BSN_CONTEXT_WORDS
    iban: bool = False
    payment_card: bool = False
    # name -> RE2 pattern, checked at load
    patterns: dict[str, str] = field(default_factory=dict, metadata=_check(_patterns))
    scope: tuple[ContentScope, ...] = defaults.CONTENT_SCOPE
    # scope attachment_text: PDF, DOCX, XLSX, ODT read up to this size, in at most this time
    attachment_max_bytes: int = field(
        default=defaults.CONTENT_ATTACHMENT_MAX_BYTES, metadata=_check(_positive)
    )
    attachment_timeout: float = field(
        default=defaults.CONTENT_ATTACHMENT_TIMEOUT, metadata=_check(_positive)
    )
    # compiled once, at load; not a key
    compiled_patterns: tuple[tuple[str, Any], ...] = field(
        default=(), init=False, repr=False, compare=False, metadata={"internal": True}
    )

    def __post_init__(self) -> None:
        compiled = tuple((name, compile_pattern(src)) for name, src in self.patterns.items())
        object.__setattr__(self, "compiled_patterns", compiled)

    @property
    def active(self) -> bool:
        """Whether any rule is on (else the message's text is not even read)."""
        return bool(self.bsn or self.iban or self.payment_card or self.patterns) and bool(
            self.scope
        )


@dataclass(frozen=True)
class SelectionConfig:
    mode: Literal["all", "rules"] = "all"
    subject_triggers: tuple[str, ...] = ()
    remove_trigger: bool = False
    senders: tuple[str, ...] = field(default=(), metadata=_check(_address_list))
    sensitivity_labels: tuple[str, ...] = ()
    directive_headers: bool = True
    content: ContentConfig = ContentConfig()


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    # text: one line per event (the journal); json: one JSON object per line
    format: Literal["text", "json"] = "text"


def _optional_host_port(value: str) -> str:
    return _host_port(value) if value else value


@dataclass(frozen=True)
class MetricsConfig:
    # HOST:PORT where `zivmilter run` serves Prometheus metrics; empty: no metrics. Bind it to
    # an admin address: the page has no authentication of its own.
    listen: str = field(default="", metadata=_check(_optional_host_port))
    # The portal serves /metrics only to `Authorization: Bearer TOKEN`; empty: no /metrics.
    token: str = ""
    # `zivmilter maintenance` writes its gauges here (node_exporter's textfile collector,
    # a FILE.prom in its folder); empty: not written.
    textfile: str = field(default="", metadata={"path": True})


def _per_language(values: Mapping[str, str]) -> dict[str, str]:
    for lang in values:
        if lang not in defaults.LANGUAGES:
            raise ValueError(f"{lang!r} is not one of {', '.join(defaults.LANGUAGES)}")
    return {lang: text.strip() for lang, text in values.items()}


def _optional_url(value: str) -> str:
    return _url(value) if value else value


def _sender_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise ValueError("required: list at least one sender domain or address pattern")
    return tuple(_branding.check_sender_pattern(v) for v in values)


def _read_logo(path: str | None) -> _branding.Logo | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(defaults.BRAND_LOGO_MAX_BYTES + 1)
    except OSError as exc:
        raise FieldProblem("logo", f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return _branding.check_logo(data)
    except ValueError as exc:
        raise FieldProblem("logo", f"{path}: {exc}") from None


@dataclass(frozen=True)
class SupportConfig:
    """How a recipient gets help: shown in the notification and on every portal page."""

    phone: str = ""
    url: str = field(default="", metadata=_check(_optional_url))
    address: str = ""  # an email or postal address, shown as it is written


@dataclass(frozen=True)
class UnitConfig:
    """A department or second organization on this gateway: its own name, logo and texts for
    mail from its senders; what it leaves out comes from `branding`."""

    senders: tuple[str, ...] = field(metadata=_check(_sender_patterns))
    name: str = ""
    logo: str | None = field(default=None, metadata={"path": True})
    color: str | None = field(default=None, metadata=_check(_branding.check_color))
    support: SupportConfig | None = None
    introduction: dict[str, str] = field(default_factory=dict, metadata=_check(_per_language))
    footer: dict[str, str] = field(default_factory=dict, metadata=_check(_per_language))
    logo_image: _branding.Logo | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"internal": True}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "logo_image", _read_logo(self.logo))


@dataclass(frozen=True)
class BrandingConfig:
    """The organization's brand on the notification and the portal (issue 25 part 2)."""

    logo: str | None = field(default=None, metadata={"path": True})  # PNG or SVG
    # buttons, the header's accent and links; its contrast is checked
    color: str | None = field(default=None, metadata=_check(_branding.check_color))
    support: SupportConfig | None = None
    # per language: a paragraph opening the notification, and its closing line
    introduction: dict[str, str] = field(default_factory=dict, metadata=_check(_per_language))
    footer: dict[str, str] = field(default_factory=dict, metadata=_check(_per_language))
    # unit name -> unit; the first whose senders match a message's author is its brand
    units: dict[str, UnitConfig] = field(default_factory=dict)
    # a folder of templates that replace the shipped ones of the same name (check-config
    # renders each of them on sample data)
    templates: str | None = field(default=None, metadata={"path": True})
    logo_image: _branding.Logo | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"internal": True}
    )

    def __post_init__(self) -> None:
        for key in self.units:
            try:
                _branding.check_unit_key(key)
            except ValueError as exc:
                raise FieldProblem(f"units.{key}", str(exc)) from None
        if self.templates is not None and not os.path.isdir(self.templates):
            raise FieldProblem("templates", f"{self.templates}: not a folder")
        object.__setattr__(self, "logo_image", _read_logo(self.logo))


@dataclass(frozen=True)
class Config:
    organization: OrganizationConfig
    policy: PolicyConfig = PolicyConfig()
    nta7516: Nta7516Config = Nta7516Config()
    idd: IddConfig = IddConfig()
    milter: MilterConfig = MilterConfig()
    store: StoreConfig = StoreConfig()
    reinject: ReinjectConfig = ReinjectConfig()
    portal: PortalConfig = PortalConfig()
    sms: SmsConfig = SmsConfig()
    notification: NotificationConfig = NotificationConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    transport: TransportConfig = TransportConfig()
    submission: SubmissionConfig = SubmissionConfig()
    selection: SelectionConfig = SelectionConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    branding: BrandingConfig = BrandingConfig()
    source: str = field(default="<memory>", metadata={"internal": True})
    # the resolved brands by key (core/branding.py), built once
    brands: dict[str, _branding.Brand] = field(
        default_factory=dict, init=False, repr=False, compare=False, metadata={"internal": True}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "brands", _branding.brands(self.branding, self.organization.name))

    def brand_for(self, sender: str | None) -> _branding.Brand:
        """The brand of a message by its author (the first matching unit, else the
        organization's)."""
        return self.brands[_branding.unit_for(self.branding, sender)]


def from_mapping(data: Any, source: str = "<memory>", base_dir: str | None = None) -> Config:
    """Validate an already parsed mapping (tests, embedded defaults)."""
    try:
        cfg: Config = build(Config, data, "", base_dir)
    except Invalid as exc:
        raise ConfigError(source, exc.key, exc.problem) from None
    return dataclasses.replace(cfg, source=source)


def load(path: str) -> Config:
    """Read and validate a config file; every problem is a ConfigError naming file and key."""
    return from_mapping(
        read_yaml(path), source=path, base_dir=os.path.dirname(os.path.abspath(path))
    )
