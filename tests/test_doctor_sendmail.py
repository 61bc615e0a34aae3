"""The Sendmail checks of `zivmilter doctor` (ops/sendmail.py) on sendmail.cf text as m4 writes
it. The real sendmail.cf, built from sendmail/zivmilter.mc, is checked in
tests/integration/test_doctor.py."""

from __future__ import annotations

import pytest

from zivmilter.core import config as config_mod
from zivmilter.ops.sendmail import parse_sendmail_cf, sendmail_checks

CFG = config_mod.from_mapping(
    {
        "organization": {"domains": ["hospital.example"]},
        "milter": {"socket": "inet:9900@127.0.0.1", "mta": "sendmail"},
    }
)

GOOD = """\
O InputMailFilters=zivmilter, opendkim
# Milter options
#O Milter.LogLevel
O Milter.macros.connect=j, _, v, {daemon_name}, {if_name}, {if_addr}, {client_addr}
O Milter.macros.envfrom=i, {auth_type}, {auth_authen}
O Milter.macros.eom={msg_id}, i
Xzivmilter, S=inet:9900@127.0.0.1, F=T, T=C:30s;S:5m;R:5m;E:10m
Xopendkim, S=inet:8891@127.0.0.1,
\tF=T
"""


def failing(text: str, cfg: config_mod.Config = CFG) -> dict[str, str]:
    checks = sendmail_checks(parse_sendmail_cf(text, "/etc/mail/sendmail.cf"), cfg)
    return {c.id: c.fix for c in checks if not c.ok}


def test_the_shipped_wiring_passes_and_continuation_lines_are_read() -> None:
    view = parse_sendmail_cf(GOOD, "/etc/mail/sendmail.cf")
    assert view.filter("opendkim") is not None
    assert view.filter("opendkim").equates == {"S": "inet:8891@127.0.0.1", "F": "T"}  # type: ignore[union-attr]
    assert failing(GOOD) == {}


@pytest.mark.parametrize(
    ("old", "new", "cid", "fix"),
    [
        (", F=T, T=C", ", T=C", "sendmail-tempfail", "`S=inet:9900@127.0.0.1, F=T, T=C:30s"),
        ("S=inet:9900@", "S=inet:9901@", "sendmail-socket", "`S=inet:9900@127.0.0.1, F=T"),
        (" v, {daemon_name},", " v,", "sendmail-macros", "{client_addr}, {daemon_name}')dnl"),
        (", {auth_authen}", "", "sendmail-macros", "`i, {auth_type}, {auth_authen}')dnl"),
        ("=zivmilter, opendkim", "=opendkim, zivmilter", "sendmail-dkim-order",
         "define(`confINPUT_MAIL_FILTERS', `zivmilter, opendkim')dnl"),
        ("=zivmilter, opendkim", "=opendkim", "sendmail-filter", "INPUT_MAIL_FILTER(`zivmilter'"),
    ],
)  # fmt: skip
def test_each_fault_names_the_mc_line(old: str, new: str, cid: str, fix: str) -> None:
    assert old in GOOD
    found = failing(GOOD.replace(old, new))
    assert set(found) == {cid}
    assert fix in found[cid]
    assert found[cid].startswith("in /etc/mail/") and "make -C /etc/mail" in found[cid]


def test_unix_socket_spellings_and_the_mta_key() -> None:
    cfg = config_mod.from_mapping(
        {"organization": {"domains": ["hospital.example"]}, "milter": {"socket": "unix:/run/z.s"}}
    )
    text = GOOD.replace("S=inet:9900@127.0.0.1", "S=local:/run/z.s")
    assert set(failing(text, cfg)) == {"milter-mta"}
    assert "milter.mta: sendmail" in failing(text, cfg)["milter-mta"]
