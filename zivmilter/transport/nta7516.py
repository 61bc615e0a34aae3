"""NTA 7516 declarations of recipient domains (SPEC 4a): parse, then judge. Pure, no I/O.

probe.py fetches the apex TXT records (with the resolver's AD bit) into an `NtaLookup`;
`interpret` turns that into a record or the reason there is none, `evaluate` adds the admin's
lists and today's date and gives the policy core its `NtaFact`. Dates are UTC.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

from zivmilter.core.addresses import normalize_domain
from zivmilter.core.config import Nta7516Config
from zivmilter.core.facts import NtaFact, TransportFact, nta_from_config
from zivmilter.core.route import is_route_host
from zivmilter.transport.model import NtaLookup

VERSION = "NTA7516-1"
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_SINGLE_TAGS = ("v", "startdate", "enddate", "provider")


@dataclass(frozen=True)
class NtaRecord:
    """A well-formed declaration: valid from `start` to `end`, both days included."""

    start: date
    end: date
    provider: str
    mx: tuple[str, ...] = ()  # ntamx hosts, lowest preference first
    preferences: tuple[int, ...] = ()  # the preference of each host in `mx`

    @property
    def ntamx(self) -> list[tuple[int, str]]:
        """(preference, host) of each ntamx host, lowest preference first (probe.py)."""
        return list(zip(self.preferences, self.mx, strict=True))


def is_candidate(txt: str) -> bool:
    """A TXT record that claims to be an NTA 7516 declaration (of any version)."""
    return txt.lstrip().lower().startswith("v=nta7516")


def _month(value: str, last_day: bool) -> date | None:
    m = _MONTH.match(value)
    if not m:
        return None
    year, month = int(m.group(1)), int(m.group(2))
    return date(year, month, calendar.monthrange(year, month)[1] if last_day else 1)


def parse(text: str) -> NtaRecord | str:
    """The record, or the reason it is malformed."""
    tags: dict[str, str] = {}
    ntamx: list[tuple[int, int, str]] = []
    parts = [p.strip() for p in text.split(";")]
    for index, part in enumerate(p for p in parts if p):
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq:
            return f"{part!r} is not a tag=value pair"
        if index == 0 and key != "v":
            return "the record must start with v=NTA7516-1"
        if key == "ntamx":
            pref, _, host = value.partition(" ")
            if not pref.isdigit() or int(pref) > 65535:
                return f"ntamx={value!r}: preference must be a number from 0 to 65535"
            try:
                name = normalize_domain(host.strip())
            except ValueError:
                return f"ntamx={value!r}: {host.strip()!r} is not a host name"
            if not is_route_host(name):  # e.g. a numeric top-level label
                return f"ntamx={value!r}: {host.strip()!r} is not a host name"
            if all(name != known for _, _, known in ntamx):
                ntamx.append((int(pref), len(ntamx), name))
        elif key in _SINGLE_TAGS:
            if key in tags:
                return f"{key} appears more than once"
            tags[key] = value
        # Unknown tags are skipped: later revisions of the standard may add some.
    if tags.get("v", "").upper() != VERSION:
        return f"unsupported version v={tags.get('v', '')!r} (expected {VERSION})"
    for key in ("startdate", "enddate", "provider"):
        if not tags.get(key):
            return f"{key} is missing"
    start = _month(tags["startdate"], last_day=False)
    end = _month(tags["enddate"], last_day=True)
    if start is None:
        return f"startdate={tags['startdate']!r} is not YYYY-MM"
    if end is None:
        return f"enddate={tags['enddate']!r} is not YYYY-MM"
    if end < start:
        return "enddate lies before startdate"
    ordered = sorted(ntamx)
    return NtaRecord(
        start,
        end,
        tags["provider"],
        tuple(h for _, _, h in ordered),
        tuple(p for p, _, _ in ordered),
    )


def interpret(lookup: NtaLookup) -> NtaRecord | str:
    """The domain's declaration, or why it has none that counts (before dates and config)."""
    if lookup.error:
        return f"NTA 7516 lookup failed: {lookup.error}"
    if not lookup.records:
        return "no NTA 7516 record"
    if len(lookup.records) > 1:
        return f"{len(lookup.records)} NTA 7516 records (exactly one may be published)"
    if not lookup.secure:
        return "the NTA 7516 record is not DNSSEC-signed"
    parsed = parse(lookup.records[0])
    return parsed if isinstance(parsed, NtaRecord) else f"malformed NTA 7516 record: {parsed}"


def judge(found: NtaRecord | str, today: date, ntamx: TransportFact | None = None) -> NtaFact:
    """A record's verdict on a given day (config lists aside); `ntamx`: what its ntamx hosts
    were probed to meet, when it names any."""
    if isinstance(found, str):
        return NtaFact(False, found)
    if today < found.start:
        return NtaFact(False, f"the NTA 7516 record is valid only from {found.start.isoformat()}")
    if today > found.end:
        return NtaFact(False, f"the NTA 7516 record expired after {found.end.isoformat()}")
    return NtaFact(
        True,
        f"NTA 7516 record (provider {found.provider}) valid "
        f"{found.start.isoformat()} to {found.end.isoformat()}",
        found.mx,
        ntamx if found.mx else None,
    )


def evaluate(
    domain: str,
    found: NtaRecord | str,
    config: Nta7516Config,
    today: date,
    ntamx: TransportFact | None = None,
) -> NtaFact:
    """The admin's lists first (exclusion wins), then the domain's own record."""
    listed = nta_from_config(domain, config)
    return listed if listed is not None else judge(found, today, ntamx)
