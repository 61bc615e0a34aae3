"""The Postfix side of `zivmilter doctor`, as pure functions: a `PostfixView` (main.cf values,
master.cf services and their `-o` overrides) and a table lookup in, one `Check` per fact out.

Nothing here runs postconf or opens a socket: doctor.py does, and hands the answers over. A new
check is one more function returning a `Check`; sendmail.py holds Sendmail's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from zivmilter.core import dkim
from zivmilter.core.config import Config

ROUTE_HEADER = "X-Zivmilter-Route"
LEVELS = ("tls", "pkix", "pane", "dane")

# What zivmilter reads from Postfix, per milter stage (mta/milter.py's getsymval calls).
REQUIRED_MACROS: Mapping[str, tuple[str, ...]] = {
    "milter_connect_macros": ("{daemon_name}", "v"),
    "milter_end_of_data_macros": ("i", "{auth_authen}"),
}

# The smtp_tls_security_level values that enforce each level (stricter ones count too).
_TLS_LEVELS: Mapping[str, tuple[str, ...]] = {
    "tls": ("encrypt", "verify", "secure", "dane-only"),
    "pkix": ("verify", "secure"),
    "pane": ("verify", "secure"),
    "dane": ("dane-only",),
}
_SHIPPED_TLS_LEVEL = {"tls": "encrypt", "pkix": "verify", "pane": "verify", "dane": "dane-only"}
_WEAK_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")

# Where every fix points for the full, commented settings.
SNIPPETS = "postfix/main.cf.zivmilter and postfix/master.cf.zivmilter"

# `lookup(table, text)`: what a Postfix table answers for one header line (postmap -q), or None.
Lookup = Callable[[str, str], str | None]


@dataclass(frozen=True)
class Check:
    """One line of the checklist: `fix` says what to change when `ok` is false."""

    id: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Service:
    """One master.cf service: `overrides` are its `-o name=value` settings."""

    name: str
    type: str
    command: str
    overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PostfixView:
    """What postconf says: effective main.cf values, and the master.cf services."""

    main: Mapping[str, str]
    services: tuple[Service, ...] = ()
    config_dir: str = "/etc/postfix"

    def service(self, name: str, type_: str | None = None) -> Service | None:
        for svc in self.services:
            if svc.name == name and (type_ is None or svc.type == type_):
                return svc
        return None

    def param(self, svc: Service | None, name: str) -> str:
        """A parameter as that service sees it: its own `-o`, else main.cf's."""
        if svc is not None and name in svc.overrides:
            return svc.overrides[name]
        return self.main.get(name, "")

    def postconf(self) -> str:
        return "postconf" if self.config_dir == "/etc/postfix" else f"postconf -c {self.config_dir}"


def postfix_socket(spec: str) -> str:
    """Postfix's spelling of a libmilter socket: inet:PORT@HOST -> inet:HOST:PORT, local: and
    bare paths -> unix:."""
    found = re.fullmatch(r"(inet6?):(\d+)@(.+)", spec)
    if found is not None:
        family, port, host = found.groups()
        return f"inet:[{host}]:{port}" if family == "inet6" else f"inet:{host}:{port}"
    if spec.startswith("local:"):
        return "unix:" + spec.removeprefix("local:")
    if spec.startswith("/"):
        return "unix:" + spec
    if spec.startswith("inet:") and "@" not in spec:
        return f"inet:127.0.0.1:{spec.removeprefix('inet:')}"  # libmilter: no host = any
    return spec


def milter_entries(value: str) -> list[tuple[str, dict[str, str]]]:
    """A milter list (`smtpd_milters`): each socket with its `{ socket, name=value }` options."""
    entries: list[tuple[str, dict[str, str]]] = []
    for braced, plain in re.findall(r"\{([^}]*)\}|([^\s,{}]+)", value):
        if plain:
            entries.append((plain, {}))
            continue
        parts = [p.strip() for p in braced.split(",") if p.strip()]
        if not parts:
            continue
        opts = {}
        for part in parts[1:]:
            name, _, val = part.partition("=")
            opts[name.strip()] = val.strip()
        entries.append((parts[0], opts))
    return entries


def _socket_fix(view: PostfixView, param: str, sock: str) -> str:
    current = view.main.get(param, "").strip()
    value = f"{current}, {sock}" if current else sock
    return f"{view.postconf()} -e '{param} = {value}'"


def check_milter_lists(view: PostfixView, cfg: Config) -> Iterator[Check]:
    """smtpd_milters and non_smtpd_milters name zivmilter's socket; a failing milter tempfails."""
    sock = postfix_socket(cfg.milter.socket)
    for param in ("smtpd_milters", "non_smtpd_milters"):
        entries = milter_entries(view.main.get(param, ""))
        named = [opts for s, opts in entries if s == sock]
        what = "mail received over SMTP" if param == "smtpd_milters" else "mail from sendmail(1)"
        if named:
            yield Check(param.replace("_", "-"), True, f"{param} names {sock}")
        else:
            yield Check(
                param.replace("_", "-"),
                False,
                f"{param} does not name {sock}: {what} is not secured",
                _socket_fix(view, param, sock),
            )
    action = view.main.get("milter_default_action", "")
    per_milter = [
        opts["default_action"]
        for param in ("smtpd_milters", "non_smtpd_milters")
        for s, opts in milter_entries(view.main.get(param, ""))
        if s == sock and "default_action" in opts
    ]
    bad = [a for a in [action, *per_milter] if a != "tempfail"]
    if not bad:
        yield Check("milter-default-action", True, "milter_default_action = tempfail")
    else:
        fix = f"{view.postconf()} -e 'milter_default_action = tempfail'"
        if per_milter:
            fix += f" and remove default_action= from the {{ {sock}, ... }} entry"
        yield Check(
            "milter-default-action",
            False,
            f"a failing milter makes Postfix {bad[0]} the message instead of tempfail (SPEC 10)",
            fix,
        )


def check_macros(view: PostfixView) -> Check:
    missing: list[str] = []
    fixes: list[str] = []
    for param, wanted in REQUIRED_MACROS.items():
        have = view.main.get(param, "").split()
        lacking = [m for m in wanted if m not in have]
        if lacking:
            missing.append(f"{param} lacks {' '.join(lacking)}")
            fixes.append(f"{view.postconf()} -e '{param} = {' '.join([*have, *lacking])}'")
    if not missing:
        passed = "; ".join(f"{p}: {' '.join(m)}" for p, m in REQUIRED_MACROS.items())
        return Check("milter-macros", True, f"the macros zivmilter reads are passed ({passed})")
    return Check("milter-macros", False, "; ".join(missing), " && ".join(fixes))


def reinject_service(view: PostfixView, cfg: Config) -> Service | None:
    """The master.cf inet service on reinject.host:reinject.port (or the port on all addresses)."""
    return _inet_service(view, cfg.reinject.host, cfg.reinject.port)


def check_reinject_listener(view: PostfixView, cfg: Config) -> Iterator[Check]:
    where = f"{cfg.reinject.host}:{cfg.reinject.port}"
    svc = reinject_service(view, cfg)
    if svc is None:
        yield Check(
            "reinject-listener",
            False,
            f"master.cf has no service {where} (reinject.host/port): copies and notifications "
            "cannot go back to Postfix",
            f"append the {where} smtpd service of postfix/master.cf.zivmilter to "
            f"{view.config_dir}/master.cf (its name {where}), then postfix reload",
        )
        yield Check(
            "reinject-no-milters",
            False,
            f"no re-injection service {where} to check",
            "add the re-injection service first (see reinject-listener)",
        )
        return
    yield Check("reinject-listener", True, f"master.cf service {svc.name} ({svc.command})")
    no_milters = "no_milters" in re.split(r"[\s,]+", view.param(svc, "receive_override_options"))
    lists = {p: view.param(svc, p).strip() for p in ("smtpd_milters", "non_smtpd_milters")}
    active = "; ".join(f"{k} = {v}" for k, v in lists.items() if v)
    sock = postfix_socket(cfg.milter.socket)
    # A DKIM signer alone belongs here (dkim-reinject); zivmilter's own socket never does.
    ours = any(s == sock for v in lists.values() for s, _ in milter_entries(v))
    if no_milters or not active:
        yield Check("reinject-no-milters", True, f"{svc.name} runs no milter")
    elif not ours:
        yield Check("reinject-no-milters", True, f"{svc.name} runs no zivmilter ({active})")
    else:
        yield Check(
            "reinject-no-milters",
            False,
            f"{svc.name} passes mail to milters ({active}): every copy zivmilter re-injects "
            "would be secured again",
            f"in {view.config_dir}/master.cf, under {svc.name}: "
            "-o smtpd_milters= -o non_smtpd_milters= -o receive_override_options="
            "no_unknown_recipient_checks,no_address_mappings,no_milters",
        )


def check_dkim_order(view: PostfixView, cfg: Config) -> Iterator[Check]:
    """A DKIM signer beside zivmilter signs what zivmilter wrote (issue 23, core/dkim.py): listed
    after zivmilter, alone on the re-injection listener, and on the replies listener. Any milter
    listed beside zivmilter counts as the signer; with none, there is nothing to order."""
    sock = postfix_socket(cfg.milter.socket)
    listener = reinject_service(view, cfg)
    reinject = listener.name if listener is not None else f"{cfg.reinject.host}:{cfg.reinject.port}"
    replies = _inet_service(view, cfg.reinject.host, cfg.reinject.replies_port)
    services = {
        f"{svc.name}/{svc.type}/{name}": value
        for svc in view.services
        for name, value in svc.overrides.items()
    }
    main = {p: view.main.get(p, "") for p in ("smtpd_milters", "non_smtpd_milters")}
    signers = sorted({s for v in main.values() for s, _ in milter_entries(v) if s != sock}, key=str)
    problems = dkim.postfix_order_problems(
        main, services, sock, reinject, replies.name if replies is not None else None
    )
    found: dict[str, list[dkim.OrderProblem]] = {"order": [], "reinject": [], "replies": []}
    for p in problems:
        if p.parameter in main:
            if "is not listed" not in p.problem:  # smtpd-milters/non-smtpd-milters say so
                found["order"].append(p)
        elif p.parameter.startswith(f"{reinject}/"):
            if not p.problem.startswith("zivmilter runs"):  # reinject-no-milters says so
                found["reinject"].append(p)
        else:
            found["replies"].append(p)
    where = {
        "order": "",
        "reinject": f"in {view.config_dir}/master.cf, under {reinject}: ",
        "replies": f"in {view.config_dir}/master.cf, under "
        f"{replies.name if replies is not None else 'the replies listener'}: ",
    }
    passed = {
        "order": f"zivmilter runs before {', '.join(signers)} in smtpd_milters and "
        "non_smtpd_milters",
        "reinject": f"the re-injection listener {reinject} runs the signer",
        "replies": "the replies listener runs the signer",
    }
    for part in ("order", "reinject", "replies"):
        cid = f"dkim-{part}"
        if not signers:
            yield Check(cid, True, "no milter beside zivmilter: no DKIM signer to wire")
        elif not found[part]:
            yield Check(cid, True, passed[part])
        else:
            yield Check(
                cid,
                False,
                "; ".join(f"{p.parameter}: {p.problem}" for p in found[part]),
                " && ".join(f"{view.postconf()} -e '{p.fix}'" for p in found[part])
                + " (README: DKIM and DMARC)"
                if part == "order"
                else where[part]
                + " ".join(p.fix for p in found[part])
                + " (README: DKIM and DMARC)",
            )


def _inet_service(view: PostfixView, host: str, port: int) -> Service | None:
    for name in (f"{host}:{port}", f"[{host}]:{port}", str(port)):
        svc = view.service(name, "inet")
        if svc is not None:
            return svc
    return None


def _route_line(level: str) -> str:
    return f"{ROUTE_HEADER}: direct-{level}"


def _nexthop_line(level: str) -> str:
    return f"{ROUTE_HEADER}: direct-{level} nexthop=[mx1.doctor.invalid],[mx2.doctor.invalid]"


def _filter_target(action: str | None) -> tuple[str, str] | None:
    """(transport, nexthop) of a FILTER action, None for anything else."""
    if action is None:
        return None
    found = re.fullmatch(r"FILTER\s+([^:\s]+):(\S*)", action.strip())
    return None if found is None else (found.group(1), found.group(2))


def _check_table_routes(
    view: PostfixView, lookup: Lookup, table: str, where: str, prefix: str
) -> Iterator[Check]:
    for level in LEVELS:
        cid = f"{prefix}-{level}"
        if not table:
            yield Check(
                cid,
                False,
                f"{where} is empty: nothing routes direct-{level} mail",
                f"set {where} as in {SNIPPETS}",
            )
            continue
        plain = _filter_target(lookup(table, _route_line(level)))
        nexthop = _filter_target(lookup(table, _nexthop_line(level)))
        problems = []
        if plain is None or plain[1]:
            problems.append(
                f"'{_route_line(level)}' is not FILTERed to a transport with an empty next hop"
            )
        if nexthop is None or nexthop[1] != "[mx1.doctor.invalid],[mx2.doctor.invalid]":
            problems.append(
                f"the NTA 7516 form 'direct-{level} nexthop=[...]' is not FILTERed "
                "with its hosts as next hop"
            )
        transports = {t[0] for t in (plain, nexthop) if t is not None}
        for name in sorted(transports):
            svc = view.service(name, "unix")
            if svc is None:
                problems.append(f"it names transport {name}, which master.cf lacks")
            elif name != f"zivmilter-{level}":
                problems.append(f"it names transport {name}, not zivmilter-{level}")
        if not problems:
            yield Check(cid, True, f"{where} FILTERs direct-{level} to zivmilter-{level}")
        else:
            yield Check(
                cid,
                False,
                f"{where} ({table}): " + "; ".join(problems),
                f"use the direct-{level} lines of postfix/zivmilter_milter_header_checks in "
                f"{table.partition(':')[2]}, and the zivmilter-{level} service of "
                f"postfix/master.cf.zivmilter in master.cf",
            )


def check_routes(view: PostfixView, cfg: Config, lookup: Lookup) -> Iterator[Check]:
    """The route header reaches the transport of its level, on both ways in."""
    yield from _check_table_routes(
        view, lookup, view.main.get("milter_header_checks", ""), "milter_header_checks", "route"
    )
    yield from check_reinject_routes(view, cfg, lookup)


def check_reinject_routes(view: PostfixView, cfg: Config, lookup: Lookup) -> Iterator[Check]:
    """The route header of a re-injected copy reaches the transport of its level."""
    listener = reinject_service(view, cfg)
    cleanup = view.service(view.param(listener, "cleanup_service_name") or "cleanup", "unix")
    table = view.param(cleanup, "header_checks") if listener is not None else ""
    name = cleanup.name if cleanup is not None else "cleanup"
    yield from _check_table_routes(
        view, lookup, table, f"header_checks of the re-injection cleanup ({name})", "reinject-route"
    )


def _protocols_ok(value: str) -> bool:
    text = value.replace(" ", "")
    if re.fullmatch(r">=TLSv1\.[23]", text):
        return True
    excluded = {p.removeprefix("!") for p in re.split(r"[,:\s]+", value) if p.startswith("!")}
    return all(p in excluded for p in _WEAK_PROTOCOLS)


def check_transports(view: PostfixView) -> Iterator[Check]:
    """Each level's transport enforces that level, whatever main.cf says for ordinary mail."""
    for level in LEVELS:
        name = f"zivmilter-{level}"
        svc = view.service(name, "unix")
        cid = f"transport-{level}"
        if svc is None:
            yield Check(
                cid,
                False,
                f"master.cf has no {name} service",
                f"append the {name} service of postfix/master.cf.zivmilter to "
                f"{view.config_dir}/master.cf",
            )
            continue
        problems: list[str] = []
        lines: list[str] = []
        security = view.param(svc, "smtp_tls_security_level")
        if security not in _TLS_LEVELS[level]:
            problems.append(f"smtp_tls_security_level = {security or '(empty)'}")
            lines.append(f"-o smtp_tls_security_level={_SHIPPED_TLS_LEVEL[level]}")
        protocols = view.param(svc, "smtp_tls_mandatory_protocols")
        if not _protocols_ok(protocols):
            problems.append(f"smtp_tls_mandatory_protocols = {protocols} allows TLS below 1.2")
            lines.append("-o smtp_tls_mandatory_protocols=>=TLSv1.2")
        if level in ("pane", "dane") and view.param(svc, "smtp_dns_support_level") != "dnssec":
            problems.append("smtp_dns_support_level is not dnssec")
            lines.append("-o smtp_dns_support_level=dnssec")
        if svc.overrides.get("smtp_tls_policy_maps", None) != "":
            problems.append(
                "no -o smtp_tls_policy_maps= (a site-wide policy map would override the level)"
            )
            lines.append("-o smtp_tls_policy_maps=")
        if view.param(svc, "smtp_tls_per_site"):
            problems.append("smtp_tls_per_site applies (it can lower the level)")
            lines.append("-o smtp_tls_per_site=")
        if view.param(svc, "smtp_fallback_relay"):
            problems.append("smtp_fallback_relay applies (mail could leave via another host)")
            lines.append("-o smtp_fallback_relay=")
        if not problems:
            yield Check(
                cid,
                True,
                f"{name}: smtp_tls_security_level = {security}, TLS 1.2 or newer, no policy map",
            )
        else:
            yield Check(
                cid,
                False,
                f"{name}: " + "; ".join(problems),
                f"in {view.config_dir}/master.cf, under {name}: {' '.join(lines)}",
            )


def check_route_header_removed(view: PostfixView, lookup: Lookup) -> Iterator[Check]:
    """The route header never leaves (smtp_header_checks), nor is one from a client obeyed."""
    leaks = []
    for level in LEVELS:
        svc = view.service(f"zivmilter-{level}", "unix")
        table = view.param(svc, "smtp_header_checks")
        action = lookup(table, _route_line(level)) if table else None
        if action is None or action.split()[0] not in ("IGNORE", "STRIP"):
            leaks.append(f"zivmilter-{level}")
    if not leaks:
        yield Check(
            "route-header-removed",
            True,
            f"smtp_header_checks delete {ROUTE_HEADER} from every message sent",
        )
    else:
        yield Check(
            "route-header-removed",
            False,
            f"{', '.join(leaks)} would send {ROUTE_HEADER} to the recipient",
            f"{view.postconf()} -e 'smtp_header_checks = regexp:{view.config_dir}/"
            "zivmilter_smtp_header_checks' (the file from postfix/)",
        )
    table = view.main.get("header_checks", "")
    action = lookup(table, f"{ROUTE_HEADER}: direct-tls") if table else None
    if action is not None and action.split()[0] in ("STRIP", "IGNORE"):
        yield Check(
            "client-route-header", True, f"header_checks remove a {ROUTE_HEADER} sent by a client"
        )
    else:
        yield Check(
            "client-route-header",
            False,
            f"a client could send its own {ROUTE_HEADER} and choose a route",
            f"{view.postconf()} -e 'header_checks = regexp:{view.config_dir}/"
            "zivmilter_header_checks' (the file from postfix/)",
        )


def postfix_checks(view: PostfixView, cfg: Config, lookup: Lookup) -> list[Check]:
    """Every check of the Postfix configuration, in checklist order."""
    return [
        *check_milter_lists(view, cfg),
        check_macros(view),
        *check_reinject_listener(view, cfg),
        *check_dkim_order(view, cfg),
        *check_routes(view, cfg, lookup),
        *check_transports(view),
        *check_route_header_removed(view, lookup),
    ]


def relay_checks(view: PostfixView, cfg: Config, lookup: Lookup) -> list[Check]:
    """With Sendmail in front: the relay Postfix that carries every direct copy and the
    re-injected notifications (sendmail/README.md, section 3). It runs no milter for zivmilter
    and takes mail only on the re-injection listener, so only that path is checked."""
    return [
        *check_reinject_listener(view, cfg),
        *check_reinject_routes(view, cfg, lookup),
        *check_transports(view),
        *(c for c in check_route_header_removed(view, lookup) if c.id == "route-header-removed"),
    ]
