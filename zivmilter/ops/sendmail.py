"""The Sendmail side of `zivmilter doctor`, as pure functions: the text of a built sendmail.cf in,
one `Check` per fact out (issue 18). The relay Postfix that carries direct copies is checked by
checks.py (`relay_checks`).

m4 writes the milter settings of sendmail.mc into sendmail.cf as `O InputMailFilters=` (the order
the filters run), one `Xname, S=..., F=..., T=...` line per filter and `O Milter.macros.STAGE=`
lists. An admin edits the .mc and rebuilds, never the .cf, so every fix names the .mc line
(sendmail/zivmilter.mc) to write.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from zivmilter.core.config import Config
from zivmilter.ops.checks import Check, postfix_socket

# What zivmilter reads (mta/milter.py's getsymval calls): at connect, and from MAIL FROM on
# (libmilter keeps a transaction's macros until its end, so any later stage will do).
CONNECT_MACROS = ("{daemon_name}", "v")
TRANSACTION_MACROS = ("i", "{auth_authen}")
_TRANSACTION_STAGES = ("envfrom", "envrcpt", "data", "eoh", "eom")
SHIPPED_TIMEOUTS = "C:30s;S:5m;R:5m;E:10m"  # sendmail/zivmilter.mc
README = "sendmail/README.md"


@dataclass(frozen=True)
class Filter:
    """One `X` line: the filter's name and its equates (S=, F=, T=)."""

    name: str
    equates: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendmailView:
    """The milter settings of one sendmail.cf."""

    path: str
    filters: tuple[Filter, ...] = ()
    input_filters: tuple[str, ...] = ()
    macros: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def filter(self, name: str) -> Filter | None:
        return next((f for f in self.filters if f.name == name), None)

    @property
    def etc(self) -> str:
        return posixpath.dirname(self.path) or "."

    def fix(self, mc_file: str, line: str) -> str:
        return (
            f"in {self.etc}/{mc_file}: {line} then rebuild sendmail.cf (make -C {self.etc}) "
            "and restart Sendmail"
        )


def _split(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def parse_sendmail_cf(text: str, path: str) -> SendmailView:
    """The X lines and milter options of sendmail.cf (a line that starts with white space
    continues the one before, as Sendmail reads it)."""
    lines: list[str] = []
    for raw in text.splitlines():
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw.rstrip())
    filters: list[Filter] = []
    input_filters: tuple[str, ...] = ()
    macros: dict[str, tuple[str, ...]] = {}
    for line in lines:
        if line.startswith("X"):
            name, *parts = (p.strip() for p in line[1:].split(","))
            equates = {}
            for part in parts:
                key, sep, value = part.partition("=")
                if sep:
                    equates[key.strip()] = value.strip()
            filters.append(Filter(name, equates))
        elif line.startswith("O "):
            option, _, value = line[2:].partition("=")
            option = option.strip()
            if option == "InputMailFilters":
                input_filters = _split(value)
            elif option.startswith("Milter.macros."):
                macros[option.removeprefix("Milter.macros.")] = _split(value)
    return SendmailView(path, tuple(filters), input_filters, macros)


def _same_socket(a: str, b: str) -> bool:
    # local:/p, unix:/p and /p are one socket; inet:PORT@HOST is compared as Postfix spells it
    return postfix_socket(a.removeprefix("unix:")) == postfix_socket(b.removeprefix("unix:"))


def zivmilter_filter(view: SendmailView, cfg: Config) -> Filter | None:
    """The filter on milter.socket, else the one named zivmilter."""
    for f in view.filters:
        if _same_socket(f.equates.get("S", ""), cfg.milter.socket):
            return f
    return view.filter("zivmilter")


def _filter_line(name: str, socket: str, timeouts: str) -> str:
    return f"INPUT_MAIL_FILTER(`{name}', `S={socket}, F=T, T={timeouts}')dnl"


def check_filter(view: SendmailView, cfg: Config) -> Iterator[Check]:
    """zivmilter's filter is defined on its socket, called for mail, and tempfails on a fault."""
    sock = cfg.milter.socket
    found = zivmilter_filter(view, cfg)
    name = found.name if found is not None else "zivmilter"
    timeouts = found.equates.get("T", SHIPPED_TIMEOUTS) if found is not None else SHIPPED_TIMEOUTS
    line = _filter_line(name, sock, timeouts)
    if found is None:
        defined = ", ".join(f.name for f in view.filters) or "none"
        for cid in ("sendmail-filter", "sendmail-socket", "sendmail-tempfail"):
            yield Check(
                cid,
                False,
                f"{view.path} defines no filter on milter.socket {sock} (filters: {defined}): "
                "Sendmail passes mail unsecured",
                view.fix("zivmilter.mc", line) + f" (include it in sendmail.mc, {README})",
            )
        return
    if name in view.input_filters:
        yield Check(
            "sendmail-filter",
            True,
            f"filter {name} is in InputMailFilters ({', '.join(view.input_filters)})",
        )
    else:
        yield Check(
            "sendmail-filter",
            False,
            f"filter {name} is defined but not in InputMailFilters "
            f"({', '.join(view.input_filters) or 'empty'}): Sendmail never calls it",
            view.fix("zivmilter.mc", line + " (INPUT_MAIL_FILTER, not MAIL_FILTER)"),
        )
    given = found.equates.get("S", "")
    if _same_socket(given, sock):
        yield Check("sendmail-socket", True, f"filter {name}: S={given}, the milter.socket")
    else:
        yield Check(
            "sendmail-socket",
            False,
            f"filter {name}: S={given or '(none)'}, but zivmilter listens on milter.socket "
            f"{sock}: every message tempfails (or passes, without F=T)",
            view.fix("zivmilter.mc", line),
        )
    flags = found.equates.get("F", "")
    if "T" in flags:
        yield Check("sendmail-tempfail", True, f"filter {name}: F={flags} (tempfail on a fault)")
    else:
        yield Check(
            "sendmail-tempfail",
            False,
            f"filter {name}: F={flags or '(none)'}: zivmilter down or failing lets mail pass "
            "unsecured instead of 4xx (SPEC 10)",
            view.fix("zivmilter.mc", line),
        )


def check_macros(view: SendmailView) -> Check:
    connect = view.macros.get("connect", ())
    later = {m for stage in _TRANSACTION_STAGES for m in view.macros.get(stage, ())}
    missing: list[str] = []
    fixes: list[str] = []
    lacking = [m for m in CONNECT_MACROS if m not in connect]
    if lacking:
        missing.append(f"Milter.macros.connect lacks {' '.join(lacking)}")
        value = ", ".join([*connect, *lacking])
        fixes.append(f"define(`confMILTER_MACROS_CONNECT', `{value}')dnl")
    lacking = [m for m in TRANSACTION_MACROS if m not in later]
    if lacking:
        missing.append(f"no stage from MAIL FROM on passes {' '.join(lacking)}")
        value = ", ".join([*view.macros.get("envfrom", ()), *lacking])
        fixes.append(f"define(`confMILTER_MACROS_ENVFROM', `{value}')dnl")
    if not missing:
        return Check(
            "sendmail-macros",
            True,
            f"the macros zivmilter reads are passed ({' '.join(CONNECT_MACROS)} at connect, "
            f"{' '.join(TRANSACTION_MACROS)} from MAIL FROM on)",
        )
    return Check(
        "sendmail-macros", False, "; ".join(missing), view.fix("zivmilter.mc", " ".join(fixes))
    )


def check_dkim_order(view: SendmailView, cfg: Config) -> Check:
    """zivmilter runs before a DKIM filter (issue 23): a signature made before zivmilter rewrites
    the message does not verify. Any filter listed before zivmilter counts."""
    found = zivmilter_filter(view, cfg)
    name = found.name if found is not None else "zivmilter"
    order = list(view.input_filters)
    if name not in order:
        return Check("sendmail-dkim-order", True, f"{name} is not listed: nothing to order")
    before = order[: order.index(name)]
    if not before:
        others = [f for f in order if f != name]
        return Check(
            "sendmail-dkim-order",
            True,
            f"{name} runs first" + (f", before {', '.join(others)}" if others else ""),
        )
    fixed = ", ".join([name, *before, *order[len(before) + 1 :]])
    return Check(
        "sendmail-dkim-order",
        False,
        f"{', '.join(before)} runs before {name} (InputMailFilters={', '.join(order)}): a DKIM "
        "signature it adds does not survive zivmilter's rewrite (notifications leave unsigned)",
        view.fix(
            "sendmail.mc",
            f"define(`confINPUT_MAIL_FILTERS', `{fixed}')dnl after the INPUT_MAIL_FILTER lines",
        ),
    )


def check_mta_key(cfg: Config) -> Check:
    if cfg.milter.mta == "sendmail":
        return Check("milter-mta", True, "milter.mta: sendmail (direct copies go via the relay)")
    return Check(
        "milter-mta",
        False,
        f"milter.mta: {cfg.milter.mta} behind a Sendmail: every message is held with 451 4.3.5",
        f"set milter.mta: sendmail in zivmilter.yaml ({README}, section 3)",
    )


def sendmail_checks(view: SendmailView, cfg: Config) -> list[Check]:
    """Every check of sendmail.cf, in checklist order."""
    return [
        check_mta_key(cfg),
        *check_filter(view, cfg),
        check_macros(view),
        check_dkim_order(view, cfg),
    ]
