"""Facts the policy core decides on, behind one small Protocol.

The core never looks anything up itself: it asks a `Facts` object. `StaticFacts` is read from a
YAML facts file (tests, `explain`, admins who pin answers); the milter's live provider answers
from the store and the transport prober's cache. `ConfiguredFacts` puts the configuration's own
lists (`idd.domains`, `nta7516.domains`/`exclude`) on top of either, for every caller alike, and
`KeyedFacts` the key finder; both are `LayeredFacts`, which passes every other question on.
Answers must be fast and never raise for an unknown domain or address: unknown means the safe
side (no account, level `none`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from zivmilter.core.addresses import normalize_address, normalize_domain
from zivmilter.core.config import Config, Nta7516Config
from zivmilter.core.keys import (
    KeyFinder,
    KeyKind,
    KeyLookup,
    KeySource,
    RecipientKey,
    SkippedKey,
)
from zivmilter.core.levels import Level, TlsVersion
from zivmilter.core.route import is_route_host
from zivmilter.core.yamlschema import read_yaml
from zivmilter.errors import ConfigError, MessageError


@dataclass(frozen=True)
class TransportFact:
    """What a recipient domain's MX hosts were found to meet (weakest host decides)."""

    level: Level = Level.NONE
    # Weakest TLS version negotiated over all MX hosts; None when unknown or no TLS.
    tls_version: TlsVersion | None = None
    reason: str = "not probed"


@dataclass(frozen=True)
class NtaFact:
    """NTA 7516 compliance of a recipient domain (SPEC 4a)."""

    compliant: bool = False
    reason: str = "no NTA 7516 record"
    mx: tuple[str, ...] = ()  # ntamx hosts, lowest preference first, when the record names them
    # What the ntamx hosts meet, probed as MX hosts are (weakest host decides); None when the
    # record names no ntamx hosts or they were not probed. With ntamx hosts, rule 2 judges and
    # delivers on these, not on the domain's MX (SPEC 4a).
    mx_transport: TransportFact | None = None


@dataclass(frozen=True)
class Contact:
    """What the organization's contact book remembers of a recipient (SPEC 8)."""

    sms: str | None = None  # an SMS number the recipient already used
    access_code: bool = False  # an access code the recipient already used (kept hashed)
    language: str | None = None  # the language the recipient chose in the portal (issue 25)


class Facts(Protocol):
    def has_account(self, address: str) -> bool: ...
    def idd_enabled(self, domain: str) -> bool: ...
    def transport(self, domain: str) -> TransportFact: ...
    def nta7516(self, domain: str) -> NtaFact: ...
    def contact(self, address: str) -> Contact | None: ...
    def odd_listed(self, domain: str) -> bool:
        """Domain is on one of the organization's fetched ODD lists (config domains aside)."""
        ...

    def recipient_key(self, address: str) -> KeyLookup:
        """The recipient's trusted own key, if any, and what was skipped (issue 26); asked only
        with `encryption.enabled`."""
        ...


@dataclass(frozen=True)
class StaticFacts:
    """Facts pinned in advance; every lookup is a dict lookup."""

    accounts: frozenset[str] = frozenset()
    idd: frozenset[str] = frozenset()
    levels: dict[str, TransportFact] = field(default_factory=dict)
    nta: dict[str, NtaFact] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    odd: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()  # active sender accounts (submission.SenderAccounts)
    keys: dict[str, KeyLookup] = field(default_factory=dict)  # recipients' own keys, pinned

    def has_account(self, address: str) -> bool:
        return address in self.accounts

    def idd_enabled(self, domain: str) -> bool:
        return domain in self.idd

    def transport(self, domain: str) -> TransportFact:
        return self.levels.get(domain, _UNKNOWN_TRANSPORT)

    def nta7516(self, domain: str) -> NtaFact:
        return self.nta.get(domain, _NOT_NTA)

    def contact(self, address: str) -> Contact | None:
        return self.contacts.get(address)

    def odd_listed(self, domain: str) -> bool:
        return domain in self.odd

    def recipient_key(self, address: str) -> KeyLookup:
        return self.keys.get(address, _NO_KEY)

    def is_active_sender(self, address: str) -> bool | None:
        """Listed under `senders`: active; otherwise unknown (the file has no disabled ones)."""
        return True if address in self.senders else None


def nta_from_config(domain: str, lists: Nta7516Config) -> NtaFact | None:
    """The admin's own answer for a domain, exclusion first; None when neither list names it."""
    if domain in lists.exclude:
        return NtaFact(False, "excluded in the configuration (nta7516.exclude)")
    if domain in lists.domains:
        return NtaFact(True, "listed in the configuration (nta7516.domains)")
    return None


class LayeredFacts:
    """A facts source (pinned or live) with some answers laid on top: every question a subclass
    does not answer itself goes to `source`. The one way to compose facts (ConfiguredFacts,
    KeyedFacts), so that a question added to `Facts` is passed on in one place."""

    def __init__(self, source: Facts) -> None:
        self.source = source

    def has_account(self, address: str) -> bool:
        return self.source.has_account(address)

    def idd_enabled(self, domain: str) -> bool:
        return self.source.idd_enabled(domain)

    def transport(self, domain: str) -> TransportFact:
        return self.source.transport(domain)

    def nta7516(self, domain: str) -> NtaFact:
        return self.source.nta7516(domain)

    def contact(self, address: str) -> Contact | None:
        return self.source.contact(address)

    def odd_listed(self, domain: str) -> bool:
        return self.source.odd_listed(domain)

    def recipient_key(self, address: str) -> KeyLookup:
        return self.source.recipient_key(address)


class ConfiguredFacts(LayeredFacts):
    """A facts source (pinned or live) with the configuration's lists on top: a domain in
    `idd.domains` has IDD; `nta7516.exclude` and then `nta7516.domains` answer before the source.
    The one place these lists apply, so that `explain`, `run --facts` and `run` decide alike."""

    def __init__(self, source: Facts, cfg: Config) -> None:
        super().__init__(source)
        self.cfg = cfg
        self._idd = frozenset(cfg.idd.domains)
        self._nta = cfg.nta7516
        self._nta_named = frozenset(cfg.nta7516.domains) | frozenset(cfg.nta7516.exclude)

    def idd_enabled(self, domain: str) -> bool:
        return domain in self._idd or self.source.idd_enabled(domain)

    def nta7516(self, domain: str) -> NtaFact:
        if domain in self._nta_named:
            answer = nta_from_config(domain, self._nta)
            if answer is not None:
                return answer
        return self.source.nta7516(domain)


class KeyedFacts(LayeredFacts):
    """A facts source (pinned or live) whose recipients' keys come from a `KeyFinder` (the
    organization's key store and the configured discovery): what `zivmilter run` decides on
    with `encryption.enabled`. A facts file's pinned `keys` carry no key material, so they serve
    `explain`, not a running milter."""

    def __init__(self, source: Facts, finder: KeyFinder) -> None:
        super().__init__(source)
        self.finder = finder

    def recipient_key(self, address: str) -> KeyLookup:
        return self.finder.lookup(address)


def with_config(facts: Facts, cfg: Config) -> Facts:
    """`facts` with `cfg`'s lists on top (see ConfiguredFacts); already done: as it is."""
    if isinstance(facts, ConfiguredFacts) and facts.cfg is cfg:
        return facts
    return ConfiguredFacts(facts, cfg)


_UNKNOWN_TRANSPORT = TransportFact(Level.NONE, None, "no transport facts for this domain")
_NOT_NTA = NtaFact(False, "not listed as NTA 7516 compliant")
_NO_KEY = KeyLookup()

_FACT_KEYS = ("accounts", "idd", "transport", "nta7516", "contacts", "odd", "senders", "keys")
_KEY_FIELDS = frozenset({"kind", "ident", "source", "trusted_because", "skipped"})
_SKIPPED_FIELDS = frozenset({"kind", "ident", "source", "reason"})


def _list(data: dict[str, Any], key: str, source: str) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(source, key, "expected a list of strings")
    return value


def _norm(fn: Any, value: str, source: str, key: str) -> str:
    try:
        result: str = fn(value)
    except (ValueError, MessageError) as exc:
        raise ConfigError(source, key, str(exc)) from None
    return result


def _nta_entry(value: Any, source: str, key: str) -> NtaFact:
    """One domain of the mapping form of `nta7516`: null (compliant, delivered to its MX) or
    `{ntamx: [host, ...], transport: LEVEL | {level, tls_version}}` (hosts lowest preference
    first; transport: what those hosts meet)."""
    if value is None:
        return NtaFact(True, "listed in the facts file")
    if not isinstance(value, dict):
        raise ConfigError(source, key, "expected null or {ntamx: [host, ...], transport: LEVEL}")
    unknown = set(value) - {"ntamx", "transport"}
    if unknown:
        raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
    hosts = _list(value, "ntamx", source) if "ntamx" in value else []
    if not hosts:
        raise ConfigError(source, f"{key}.ntamx", "expected a non-empty list of host names")
    if "transport" not in value:
        raise ConfigError(source, f"{key}.transport", "the level the ntamx hosts meet is missing")
    mx: list[str] = []
    for host in hosts:
        name = _norm(normalize_domain, host, source, f"{key}.ntamx")
        if not is_route_host(name):
            raise ConfigError(source, f"{key}.ntamx", f"{host!r} cannot be a next hop")
        if name not in mx:
            mx.append(name)
    fact = _transport_fact(value["transport"], source, f"{key}.transport")
    return NtaFact(
        True,
        "listed in the facts file",
        tuple(mx),
        TransportFact(fact.level, fact.tls_version, f"{fact.level.value} (ntamx, from facts file)"),
    )


def _nta_facts(data: dict[str, Any], source: str) -> dict[str, NtaFact]:
    raw = data.get("nta7516") or []
    if isinstance(raw, dict):
        return {
            _norm(normalize_domain, str(d), source, f"nta7516.{d}"): _nta_entry(
                v, source, f"nta7516.{d}"
            )
            for d, v in raw.items()
        }
    return {
        _norm(normalize_domain, d, source, "nta7516"): NtaFact(True, "listed in the facts file")
        for d in _list(data, "nta7516", source)
    }


def _enum(cls: Any, value: Any, source: str, key: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ConfigError(source, key, f"{value!r} is not one of {choices}") from None


def _text_field(entry: dict[str, Any], name: str, source: str, key: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(source, f"{key}.{name}", "expected a non-empty string")
    return value


def _skipped(value: Any, source: str, key: str) -> SkippedKey:
    if not isinstance(value, dict) or set(value) - _SKIPPED_FIELDS:
        raise ConfigError(source, key, "expected {kind, ident, source, reason}")
    return SkippedKey(
        _enum(KeyKind, value.get("kind"), source, f"{key}.kind"),
        str(value.get("ident") or ""),
        _enum(KeySource, value.get("source"), source, f"{key}.source"),
        _text_field(value, "reason", source, key),
    )


def _key_lookup(address: str, value: Any, source: str, key: str) -> KeyLookup:
    """One address of `keys`: the key pinned as trusted (kind, ident, source, trusted_because)
    and/or what was skipped (`skipped: [{kind, ident, source, reason}]`). No key material: a
    pinned key is for deciding and `explain`, not for encrypting."""
    if not isinstance(value, dict) or set(value) - _KEY_FIELDS:
        raise ConfigError(
            source, key, "expected {kind, ident, source, trusted_because} and/or skipped: [...]"
        )
    raw_skipped = value.get("skipped") or []
    if not isinstance(raw_skipped, list):
        raise ConfigError(source, f"{key}.skipped", "expected a list")
    skipped = tuple(_skipped(v, source, f"{key}.skipped[{i}]") for i, v in enumerate(raw_skipped))
    if "kind" not in value:
        return KeyLookup(None, skipped)
    found = RecipientKey(
        kind=_enum(KeyKind, value.get("kind"), source, f"{key}.kind"),
        address=address,
        ident=_text_field(value, "ident", source, key),
        source=_enum(KeySource, value.get("source", "keystore"), source, f"{key}.source"),
        trusted_because=str(value.get("trusted_because") or "pinned in the facts file"),
        not_after=None,
        material=b"",
    )
    return KeyLookup(found, skipped)


def _transport_fact(value: Any, source: str, key: str) -> TransportFact:
    if isinstance(value, dict):
        unknown = set(value) - {"level", "tls_version"}
        if unknown:
            raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
        level_text, version_text = value.get("level"), value.get("tls_version")
    else:
        level_text, version_text = value, None
    try:
        level = Level.parse(level_text)
    except ValueError:
        choices = ", ".join(m.value for m in Level)
        raise ConfigError(source, key, f"{level_text!r} is not one of {choices}") from None
    version = TlsVersion.parse(str(version_text)) if version_text is not None else None
    if version_text is not None and version is None:
        raise ConfigError(source, f"{key}.tls_version", f"{version_text!r} is not tls1.2 or tls1.3")
    if version is None and level is not Level.NONE:
        version = TlsVersion.TLS1_2  # every level above none implies TLS >= 1.2 (SPEC 4)
    return TransportFact(level, version, f"{level.value} (from facts file)")


def facts_from_mapping(data: Any, source: str = "<facts>") -> StaticFacts:
    """Validate a facts mapping (see the facts file format in the README)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, None, "expected a mapping at the top level")
    for key in data:
        if key not in _FACT_KEYS:
            raise ConfigError(source, str(key), f"unknown key (known: {', '.join(_FACT_KEYS)})")
    accounts = {
        _norm(normalize_address, a, source, "accounts") for a in _list(data, "accounts", source)
    }
    idd = {_norm(normalize_domain, d, source, "idd") for d in _list(data, "idd", source)}
    senders = {
        _norm(normalize_address, a, source, "senders") for a in _list(data, "senders", source)
    }
    odd = {_norm(normalize_domain, d, source, "odd") for d in _list(data, "odd", source)}
    nta = _nta_facts(data, source)
    raw_levels = data.get("transport") or {}
    if not isinstance(raw_levels, dict):
        raise ConfigError(source, "transport", "expected a mapping of domain: level")
    levels = {
        _norm(normalize_domain, d, source, f"transport.{d}"): _transport_fact(
            v, source, f"transport.{d}"
        )
        for d, v in raw_levels.items()
    }
    raw_contacts = data.get("contacts") or {}
    if not isinstance(raw_contacts, dict):
        raise ConfigError(source, "contacts", "expected a mapping of address: {sms, access_code}")
    contacts: dict[str, Contact] = {}
    for addr, entry in raw_contacts.items():
        key = f"contacts.{addr}"
        if not isinstance(entry, dict) or set(entry) - {"sms", "access_code"}:
            raise ConfigError(source, key, "expected {sms: '+31...', access_code: true}")
        sms = entry.get("sms")
        if sms is not None and not (isinstance(sms, str) and _is_e164(sms)):
            raise ConfigError(
                source, f"{key}.sms", f"{sms!r} is not an E.164 number (+ and digits)"
            )
        code = entry.get("access_code", False)
        if not isinstance(code, bool):
            raise ConfigError(source, f"{key}.access_code", "expected true or false")
        contacts[_norm(normalize_address, str(addr), source, key)] = Contact(sms, code)
    raw_keys = data.get("keys") or {}
    if not isinstance(raw_keys, dict):
        raise ConfigError(source, "keys", "expected a mapping of address: {kind, ident, ...}")
    keys = {}
    for addr, entry in raw_keys.items():
        norm = _norm(normalize_address, str(addr), source, f"keys.{addr}")
        keys[norm] = _key_lookup(norm, entry, source, f"keys.{addr}")
    return StaticFacts(
        frozenset(accounts),
        frozenset(idd),
        levels,
        nta,
        contacts,
        frozenset(odd),
        frozenset(senders),
        keys,
    )


def load_facts(path: str) -> StaticFacts:
    return facts_from_mapping(read_yaml(path), path)


def _is_e164(text: str) -> bool:
    digits = text[1:]
    return (
        text.startswith("+")
        and digits.isascii()
        and digits.isdigit()
        and 2 <= len(digits) <= 15
        and digits[0] != "0"
    )
