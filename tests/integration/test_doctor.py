"""`zivmilter doctor` against a live installation: the project's private Postfix built from the
shipped postfix/ snippets, the real `zivmilter run` and `zivmilter portal`, the test DNS.

The correct setup passes every check. Each row then introduces one fault, in a copy of the
Postfix configuration folder or of zivmilter.yaml (or a stopped part), and the doctor must find
exactly that fault, exit 1, and print the fix an admin needs.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import smtplib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import sendmail
from tests.harness.dns import AUTH_ADDRESS, RESOLVER_ADDRESS, TestDns, Zone, shared_dns
from tests.harness.postfix import REPO, PostfixInstance, free_port
from tests.harness.zivmilter import ZivmilterProcess, attach

pytestmark = pytest.mark.integration
__all__ = ["shared_dns"]  # the session fixture, imported so pytest finds it here

SIGNED = "signed-doctor.example"
LEVELS = ("tls", "pkix", "pane", "dane")


@dataclass
class Live:
    pf: PostfixInstance
    z: ZivmilterProcess

    @property
    def milter_port(self) -> int:
        return self.z.port


@pytest.fixture(scope="module")
def live(shared_dns: TestDns) -> Iterator[Live]:
    shared_dns.set_zones([Zone(SIGNED, signed=True, records=["@ A 127.0.0.99"])])
    portal_port = free_port()
    pf = PostfixInstance()
    z = attach(
        pf,
        facts={},
        config={
            "portal": {"listen": f"127.0.0.1:{portal_port}"},
            "transport": {"resolver": [RESOLVER_ADDRESS]},
        },
    )
    with z, pf:
        portal = subprocess.Popen(
            [sys.executable, "-m", "zivmilter", "portal", "--config", str(z.config_file)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=(z.dir / "portal.log").open("ab"),
        )
        try:
            _wait_http(f"http://127.0.0.1:{portal_port}/healthz", portal)
            # One stored message, so that the store holds a wrapped key the doctor must unwrap.
            with smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=60) as s:
                s.sendmail(
                    "alice@hospital.example",
                    ["bob@nowhere.example"],
                    b"From: alice@hospital.example\r\nTo: bob@nowhere.example\r\n"
                    b"Subject: doctor\r\n\r\nhello\r\n",
                )
            yield Live(pf, z)
        finally:
            portal.terminate()
            portal.wait(timeout=20)


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "the portal exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, "the portal did not answer"
            time.sleep(0.1)


def doctor(
    config: Path, postfix_dir: Path, *, as_json: bool = True, sendmail_cf: Path | None = None
) -> tuple[int, Any]:
    cmd = [sys.executable, "-m", "zivmilter", "doctor", "--config", str(config)]
    cmd += ["--postfix-config", str(postfix_dir), "--dnssec-name", SIGNED]
    if sendmail_cf is not None:
        cmd += ["--sendmail-config", str(sendmail_cf)]
    if as_json:
        cmd.append("--json")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stderr == "", done.stderr
    return done.returncode, json.loads(done.stdout) if as_json else done.stdout


# --- faults: each edits a copy of the Postfix folder or of zivmilter.yaml -----------------------


@dataclass
class Setup:
    """The copies a fault edits; doctor() is run on them."""

    live: Live
    etc: Path
    config: Path

    def postconf(self, setting: str) -> None:
        subprocess.run(["postconf", "-c", str(self.etc), "-e", setting], check=True)

    def yaml_set(self, section: str, key: str, value: Any) -> None:
        data = yaml.safe_load(self.config.read_text())
        data.setdefault(section, {})[key] = value
        self.config.write_text(yaml.safe_dump(data))

    def edit_master(self, edit: Callable[[list[str]], list[str]]) -> None:
        path = self.etc / "master.cf"
        path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")

    def table(self, name: str, old: str, new: str) -> None:
        path = self.etc / name
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))


def _block(lines: list[str], service: str) -> tuple[int, int]:
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [service])
    end = start + 1
    # comment lines may sit between a service's `-o` lines (the shipped snippet has one per line)
    while end < len(lines) and (lines[end][:1].isspace() or lines[end].startswith("#")):
        end += 1
    return start, end


def drop_service(service: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        start, end = _block(lines, service)
        return lines[:start] + lines[end:]

    return edit


def service_lines(service: str, old: str, new: str | None) -> Callable[[list[str]], list[str]]:
    """Replace (new) or remove (None) the `-o` line `old` of one service."""

    def edit(lines: list[str]) -> list[str]:
        start, end = _block(lines, service)
        body = [
            line if line.strip() != old else f"  {new}"
            for line in lines[start + 1 : end]
            if new is not None or line.strip() != old
        ]
        assert len(body) != end - start - 1 or new is not None, f"{old} not under {service}"
        return [*lines[: start + 1], *body, *lines[end:]]

    return edit


def reinject_name(s: Setup) -> str:
    return f"127.0.0.1:{s.live.pf.reinject_port}"


Fault = Callable[[Setup], None]
ROWS: list[tuple[str, Fault, set[str], Callable[[Setup], str]]] = []


def fault(name: str, failing: set[str], fix: Callable[[Setup], str]) -> Callable[[Fault], Fault]:
    def register(fn: Fault) -> Fault:
        ROWS.append((name, fn, failing, fix))
        return fn

    return register


@fault("milter down", {"milter-answers"}, lambda s: "systemctl start zivmilter")
def _milter_down(s: Setup) -> None:
    port = free_port()
    s.yaml_set("milter", "socket", f"inet:{port}@127.0.0.1")
    s.postconf(f"smtpd_milters = inet:127.0.0.1:{port}")
    s.postconf(f"non_smtpd_milters = inet:127.0.0.1:{port}")


@fault(
    "smtpd_milters lacks zivmilter",
    {"smtpd-milters"},
    lambda s: f"-e 'smtpd_milters = inet:127.0.0.1:{s.live.milter_port}'",
)
def _no_smtpd_milter(s: Setup) -> None:
    s.postconf("smtpd_milters =")


@fault(
    "non_smtpd_milters names another milter",
    {"non-smtpd-milters"},
    lambda s: f"-e 'non_smtpd_milters = inet:127.0.0.1:9, inet:127.0.0.1:{s.live.milter_port}'",
)
def _other_non_smtpd_milter(s: Setup) -> None:
    s.postconf("non_smtpd_milters = inet:127.0.0.1:9")


@fault(
    "milter_default_action = accept",
    {"milter-default-action"},
    lambda s: "-e 'milter_default_action = tempfail'",
)
def _default_accept(s: Setup) -> None:
    s.postconf("milter_default_action = accept")


@fault(
    "end-of-data macros without {auth_authen}",
    {"milter-macros"},
    lambda s: "-e 'milter_end_of_data_macros = i {auth_authen}'",
)
def _macros(s: Setup) -> None:
    s.postconf("milter_end_of_data_macros = i")


@fault(
    "reinject.port names no listener",
    {"reinject-listener", "reinject-no-milters", "reinject-accepts"}
    | {f"reinject-route-{level}" for level in LEVELS},
    lambda s: "append the 127.0.0.1:",
)
def _reinject_port(s: Setup) -> None:
    s.yaml_set("reinject", "port", free_port())


@fault(
    "re-injection listener runs the milter",
    {"reinject-no-milters"},
    lambda s: f"under {reinject_name(s)}: -o smtpd_milters= -o non_smtpd_milters=",
)
def _reinject_milters(s: Setup) -> None:
    name = reinject_name(s)
    s.edit_master(service_lines(name, "-o smtpd_milters=", None))
    s.edit_master(service_lines(name, "-o non_smtpd_milters=", None))
    s.edit_master(
        service_lines(
            name,
            "-o receive_override_options="
            "no_unknown_recipient_checks,no_address_mappings,no_milters",
            None,
        )
    )


# A DKIM signer beside zivmilter (issue 23): the order check reads settings only, so a signer
# socket named in main.cf/master.cf is enough (tests/integration/test_dkim_e2e.py runs OpenDKIM).
SIGNER = "inet:127.0.0.1:8891"
SHIPPED_OVERRIDE = (
    "-o receive_override_options=no_unknown_recipient_checks,no_address_mappings,no_milters"
)


def replies_name(s: Setup) -> str:
    return f"127.0.0.1:{s.live.pf.replies_port}"


def with_signer(
    s: Setup,
    *,
    first: bool = False,
    reinject: bool = True,
    replies: bool = True,
    no_milters: bool = False,
) -> None:
    """The README's DKIM wiring, then each keyword breaks one part of it."""
    ours = f"inet:127.0.0.1:{s.live.milter_port}"
    order = f"{SIGNER}, {ours}" if first else f"{ours}, {SIGNER}"
    s.postconf(f"smtpd_milters = {order}")
    s.postconf(f"non_smtpd_milters = {ours}, {SIGNER}")
    if reinject:
        name = reinject_name(s)
        s.edit_master(service_lines(name, "-o smtpd_milters=", f"-o smtpd_milters={SIGNER}"))
        if not no_milters:
            kept = SHIPPED_OVERRIDE.removesuffix(",no_milters")
            s.edit_master(service_lines(name, SHIPPED_OVERRIDE, kept))
    if replies:
        name = replies_name(s)
        s.edit_master(service_lines(name, "-o smtpd_milters=", f"-o smtpd_milters={SIGNER}"))


# The DKIM signer's wiring (issue 23), one row each: how `with_signer` sets it up, what fails.
SIGNER_ROWS: list[tuple[str, dict[str, bool], set[str], Callable[[Setup], str]]] = [
    ("DKIM signer wired as the README says", {}, set(), lambda s: ""),
    (
        "DKIM signer listed before zivmilter",
        {"first": True},
        {"dkim-order"},
        lambda s: f"-e 'smtpd_milters = inet:127.0.0.1:{s.live.milter_port}, {SIGNER}'",
    ),
    (
        "re-injection listener left without the signer",
        {"reinject": False},
        {"dkim-reinject"},
        lambda s: f"under {reinject_name(s)}: -o smtpd_milters={SIGNER}",
    ),
    (
        "no_milters left on the re-injection listener with a signer",
        {"no_milters": True},
        {"dkim-reinject"},
        lambda s: "-o receive_override_options=no_unknown_recipient_checks,no_address_mappings ",
    ),
    (
        "replies listener without the signer",
        {"replies": False},
        {"dkim-replies"},
        lambda s: f"under {replies_name(s)}: -o smtpd_milters={SIGNER}",
    ),
]
for _name, _options, _failing, _fix in SIGNER_ROWS:
    fault(_name, _failing, _fix)(functools.partial(with_signer, **_options))


@fault(
    "direct-pkix routed to the plain smtp transport",
    {"route-pkix"},
    lambda s: "use the direct-pkix lines of postfix/zivmilter_milter_header_checks",
)
def _route_to_smtp(s: Setup) -> None:
    s.table("zivmilter_milter_header_checks", "FILTER zivmilter-pkix:", "FILTER smtp:")
    s.postconf(f"milter_header_checks = regexp:{s.etc}/zivmilter_milter_header_checks")


@fault(
    "zivmilter-dane missing from master.cf",
    {"transport-dane", "route-dane", "reinject-route-dane"},
    lambda s: "append the zivmilter-dane service of postfix/master.cf.zivmilter",
)
def _no_dane(s: Setup) -> None:
    s.edit_master(drop_service("zivmilter-dane"))


@fault(
    "zivmilter-pkix with smtp_tls_security_level=may",
    {"transport-pkix"},
    lambda s: "under zivmilter-pkix: -o smtp_tls_security_level=verify",
)
def _weak_pkix(s: Setup) -> None:
    s.edit_master(
        service_lines(
            "zivmilter-pkix",
            "-o smtp_tls_security_level=verify",
            "-o smtp_tls_security_level=may",
        )
    )


@fault(
    "zivmilter-tls without -o smtp_tls_policy_maps=",
    {"transport-tls"},
    lambda s: "under zivmilter-tls: -o smtp_tls_policy_maps=",
)
def _no_policy_override(s: Setup) -> None:
    s.edit_master(service_lines("zivmilter-tls", "-o smtp_tls_policy_maps=", None))


@fault(
    "route header not removed on the way out",
    {"route-header-removed"},
    lambda s: "-e 'smtp_header_checks = regexp:",
)
def _route_header_leaks(s: Setup) -> None:
    s.postconf("smtp_header_checks =")


@fault("key file readable by others", {"key-file", "store"}, lambda s: "chmod 600 ")
def _key_readable(s: Setup) -> None:
    key = s.config.parent / "readable.key"
    shutil.copyfile(s.live.z.key_file, key)
    key.chmod(0o644)
    s.yaml_set("store", "key_file", str(key))


@fault("another key", {"store"}, lambda s: "set store.key_file to the key this store")
def _wrong_key(s: Setup) -> None:
    key = s.config.parent / "other.key"
    subprocess.run([sys.executable, "-m", "zivmilter", "keygen", str(key)], cwd=REPO, check=True)
    s.yaml_set("store", "key_file", str(key))


@fault(
    "resolver does not validate",
    {"dnssec"},
    lambda s: "point transport.resolver at a validating resolver",
)
def _no_validation(s: Setup) -> None:
    s.yaml_set("transport", "resolver", [AUTH_ADDRESS])  # NSD: authoritative, sets no AD bit


@fault("portal down", {"portal"}, lambda s: "systemctl start zivmilter-portal")
def _portal_down(s: Setup) -> None:
    s.yaml_set("portal", "listen", f"127.0.0.1:{free_port()}")


@pytest.fixture
def setup(live: Live, tmp_path: Path) -> Setup:
    tmp_path.chmod(0o755)
    etc = tmp_path / "etc"
    shutil.copytree(live.pf.config_dir, etc)
    config = tmp_path / "zivmilter.yaml"
    shutil.copyfile(live.z.config_file, config)
    return Setup(live, etc, config)


def test_a_correct_installation_passes_every_check(live: Live) -> None:
    code, report = doctor(live.z.config_file, live.pf.config_dir)
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [], failed
    assert code == 0 and report["ok"] is True
    ids = [c["id"] for c in report["checks"]]
    for expected in (
        "milter-answers",
        "smtpd-milters",
        "non-smtpd-milters",
        "milter-default-action",
        "milter-macros",
        "reinject-listener",
        "reinject-no-milters",
        "reinject-accepts",
        "dkim-order",
        "dkim-reinject",
        "dkim-replies",
        *(f"route-{level}" for level in LEVELS),
        *(f"reinject-route-{level}" for level in LEVELS),
        *(f"transport-{level}" for level in LEVELS),
        "route-header-removed",
        "client-route-header",
        "key-file",
        "store",
        "dnssec",
        "portal",
    ):
        assert expected in ids


def test_the_checklist_reads_as_ticks(live: Live) -> None:
    code, text = doctor(live.z.config_file, live.pf.config_dir, as_json=False)
    assert code == 0
    assert re.search(r"^✓ milter-answers +the milter answers on inet:\d+@127\.0\.0\.1", text, re.M)
    assert text.rstrip().endswith(" checks, 0 faults")
    assert "✗" not in text


@pytest.mark.parametrize(
    ("fault_fn", "failing", "fix"),
    [pytest.param(fn, failing, fix, id=name) for name, fn, failing, fix in ROWS],
)
def test_each_fault_is_found_with_its_fix(
    setup: Setup, fault_fn: Fault, failing: set[str], fix: Callable[[Setup], str]
) -> None:
    fault_fn(setup)
    code, report = doctor(setup.config, setup.etc)
    found = {c["id"] for c in report["checks"] if not c["ok"]}
    assert found == failing
    if not failing:  # a variant wired right: every check passes
        assert code == 0 and report["ok"] is True
        return
    assert code == 1 and report["ok"] is False
    first = next(c for c in report["checks"] if not c["ok"] and c["id"] in failing)
    fixes = " | ".join(c["fix"] for c in report["checks"] if not c["ok"])
    assert fix(setup) in fixes, (first, fixes)
    # and in the text a human reads: the ✗ line, then the fix under it
    _, text = doctor(setup.config, setup.etc, as_json=False)
    assert re.search(rf"^✗ {re.escape(first['id'])} ", text, re.M)
    assert re.search(r"^ +fix: ", text, re.M)


# --- Sendmail in front (issue 18): the real sendmail.cf, built by m4 from sendmail/zivmilter.mc
# by the Sendmail harness, and the live Postfix as the relay that carries direct copies --------

OPENDKIM_FILTER = "INPUT_MAIL_FILTER(`opendkim', `S=inet:8891@127.0.0.1, F=T')dnl"
SHIPPED_ENVFROM = "`i, {auth_type}, {auth_authen}, {auth_ssf},"


class EditedSendmail(sendmail.SendmailInstance):
    """The harness's Sendmail configuration, with one edit of the shipped zivmilter.mc."""

    def __init__(self, milter: str, edit: Callable[[str], str], extra_mc: list[str]) -> None:
        super().__init__(milter=milter, extra_mc=extra_mc)
        self.edit = edit

    def zivmilter_mc(self) -> str:
        text = super().zivmilter_mc()
        edited = self.edit(text)
        assert edited != text or self.edit is _as_shipped, "the edit changed nothing"
        return edited


def _as_shipped(text: str) -> str:
    return text


def _replace(old: str, new: str) -> Callable[[str], str]:
    return lambda text: text.replace(old, new)


@dataclass
class SendmailRow:
    edit: Callable[[str], str] = _as_shipped
    extra_mc: tuple[str, ...] = ()
    milter: Callable[[Live], str] = lambda live: live.z.socket
    mta: str = "sendmail"


SENDMAIL_ROWS: list[tuple[str, SendmailRow, set[str], Callable[[Live], str]]] = [
    ("as shipped", SendmailRow(), set(), lambda live: ""),
    (
        "DKIM filter after zivmilter",
        SendmailRow(edit=lambda text: text + OPENDKIM_FILTER + "\n"),
        set(),
        lambda live: "",
    ),
    (
        "F=T missing",
        SendmailRow(edit=_replace(", F=T, T=", ", T=")),
        {"sendmail-tempfail"},
        lambda live: f"INPUT_MAIL_FILTER(`zivmilter', `S={live.z.socket}, F=T, T=C:30s;",
    ),
    (
        "{auth_authen} not passed",
        SendmailRow(edit=_replace(" {auth_authen},", "")),
        {"sendmail-macros"},
        lambda live: (
            "define(`confMILTER_MACROS_ENVFROM', "
            "`i, {auth_type}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}, "
            "{auth_authen}')dnl"
        ),
    ),
    (
        "{daemon_name} not passed",
        SendmailRow(edit=_replace(", {daemon_name}", "")),
        {"sendmail-macros"},
        lambda live: (
            "define(`confMILTER_MACROS_CONNECT', `j, _, v, {if_name}, {if_addr}, "
            "{client_addr}, {client_name}, {daemon_name}')dnl"
        ),
    ),
    (
        "wrong socket",
        SendmailRow(milter=lambda live: f"inet:{free_port()}@127.0.0.1"),
        {"sendmail-socket"},
        lambda live: f"INPUT_MAIL_FILTER(`zivmilter', `S={live.z.socket}, F=T,",
    ),
    (
        "DKIM filter first",
        SendmailRow(extra_mc=(OPENDKIM_FILTER,)),
        {"sendmail-dkim-order"},
        lambda live: "define(`confINPUT_MAIL_FILTERS', `zivmilter, opendkim')dnl",
    ),
    (
        "milter.mta: postfix behind Sendmail",
        SendmailRow(mta="postfix"),
        {"milter-mta"},
        lambda live: "set milter.mta: sendmail in zivmilter.yaml",
    ),
]


@pytest.mark.parametrize(
    ("row", "failing", "fix"),
    [pytest.param(row, failing, fix, id=name) for name, row, failing, fix in SENDMAIL_ROWS],
)
def test_sendmail_cf_is_checked_with_the_mc_line_to_fix(
    live: Live, tmp_path: Path, row: SendmailRow, failing: set[str], fix: Callable[[Live], str]
) -> None:
    if not sendmail.available():
        pytest.skip("Sendmail is not unpacked: scripts/install")
    tmp_path.chmod(0o755)
    built = EditedSendmail(row.milter(live), row.edit, list(row.extra_mc))
    cf = built.build_cf(tmp_path / "sendmail")
    config = tmp_path / "zivmilter.yaml"
    data = yaml.safe_load(live.z.config_file.read_text())
    data["milter"]["mta"] = row.mta
    config.write_text(yaml.safe_dump(data))

    code, report = doctor(config, live.pf.config_dir, sendmail_cf=cf)
    checks = {c["id"]: c for c in report["checks"]}
    assert {i for i, c in checks.items() if not c["ok"]} == failing
    assert code == (1 if failing else 0)
    # Sendmail's checks, and the relay's (only the re-injection path: it runs no milter for us)
    for expected in (
        "milter-answers",
        "milter-mta",
        "sendmail-filter",
        "sendmail-socket",
        "sendmail-tempfail",
        "sendmail-macros",
        "sendmail-dkim-order",
        "reinject-listener",
        "reinject-no-milters",
        "reinject-accepts",
        *(f"reinject-route-{level}" for level in LEVELS),
        *(f"transport-{level}" for level in LEVELS),
        "route-header-removed",
        "store",
        "portal",
    ):
        assert expected in checks
    for postfix_only in ("smtpd-milters", "milter-macros", "route-tls", "client-route-header"):
        assert postfix_only not in checks
    if failing:
        fixes = " | ".join(checks[i]["fix"] for i in failing)
        assert fix(live) in fixes, fixes
        if failing != {"milter-mta"}:  # a .mc line, in the folder of that sendmail.cf
            assert f"in {cf.parent}/" in fixes and f"make -C {cf.parent}" in fixes, fixes
