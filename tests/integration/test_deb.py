"""The Debian package (issue 16 part 5): scripts/build-deb builds it here, offline, lintian finds
no error in it, and `apt-get install ./zivmilter_*.deb` installs it in a clean Debian 12 booted
under systemd with no network, where an admin's checks hold: the service user, the modes, the
key made once, check-config, the units verify, the services start, doctor's store checks pass;
then remove keeps the store and the key, purge removes the configuration only.

scripts/install-deb-root (run by scripts/install, outside this sandbox) prepares what the test
would otherwise fetch: a wheelhouse for the build and a root with the .debs of the Depends line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.nspawn import CACHE, POSTFIX_DEBCONF, BootedRoot, booted, check_cache

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = "/etc/zivmilter/zivmilter.yaml"
KEY = "/etc/zivmilter/store.key"
UNITS = (
    "zivmilter.service",
    "zivmilter-portal.service",
    "zivmilter-maintenance.service",
    "zivmilter-odd-refresh.service",
    "zivmilter-maintenance.timer",
    "zivmilter-odd-refresh.timer",
)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    check_cache("install-deb-root")
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run(
        [str(REPO / "scripts/build-deb"), "--wheelhouse", str(CACHE / "deb-wheelhouse"),
         "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    [built] = out.glob("zivmilter_*.deb")
    assert re.fullmatch(r"zivmilter_[0-9.]+-1_[a-z0-9]+\.deb", built.name), built.name
    return built


@pytest.fixture(scope="module")
def box(deb: Path) -> Iterator[BootedRoot]:
    with booted(
        CACHE / "deb-root", "zivmilter-deb", prepare=lambda root: shutil.copy2(deb, root / "root")
    ) as box:
        yield box


@pytest.fixture(scope="module")
def installed(box: BootedRoot) -> BootedRoot:
    # With what it recommends (Postfix, left unconfigured for zivmilter, answering debconf as an
    # admin would). No network inside: apt finds it all in /var/cache/apt/archives.
    box.run("debconf-set-selections", stdin=POSTFIX_DEBCONF)
    box.run("apt-get install -y -q ./zivmilter_*.deb", timeout=600)
    return box


def stat(box: BootedRoot, path: str) -> str:
    return box.run(f"stat -c '%U:%G %a' {path}").stdout.strip()


def doctor(box: BootedRoot) -> dict[str, dict[str, object]]:
    """`zivmilter doctor --json` as the service user (root must not make the store's files)."""
    proc = box.run(
        f"runuser -u zivmilter -- zivmilter doctor --config {CONFIG} --json --timeout 2",
        check=False,
    )
    # Postfix is not set up for zivmilter here: its checks fail (exit 1) and say so.
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    return {c["id"]: c for c in json.loads(proc.stdout)["checks"]}


def test_lintian_finds_no_error(deb: Path) -> None:
    proc = subprocess.run(
        ["lintian", "--fail-on", "error", "--no-tag-display-limit", str(deb)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    tags = sorted({line.split()[2] for line in proc.stdout.splitlines() if ": " in line})
    print(f"lintian: {tags}")
    assert not [line for line in proc.stdout.splitlines() if line.startswith("E:")], proc.stdout
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])


def test_user_files_and_modes(installed: BootedRoot) -> None:
    user = installed.run("getent passwd zivmilter").stdout.strip().split(":")
    assert int(user[2]) < 1000 and user[6] in ("/usr/sbin/nologin", "/bin/false"), user
    assert installed.run("id -gn zivmilter").stdout.strip() == "zivmilter"
    # The store is the service user's alone; the key is made, the service user's, mode 0600.
    assert stat(installed, "/var/lib/zivmilter") == "zivmilter:zivmilter 700"
    assert stat(installed, KEY) == "zivmilter:zivmilter 600"
    assert installed.run(f"wc -c <{KEY}").stdout.strip() != "0"
    # The configuration: root writes it, the services read it through their group.
    assert stat(installed, CONFIG) == "root:zivmilter 640"
    conffiles = installed.run("dpkg-query -W -f='${Conffiles}' zivmilter").stdout.split()
    assert CONFIG in conffiles, conffiles
    # Debian's chrooted Postfix reaches the milter over loopback TCP (README step 2).
    assert "  socket: inet:10030@127.0.0.1\n" in installed.run(f"cat {CONFIG}").stdout
    links = installed.run(
        "readlink -f /usr/bin/zivmilter /opt/zivmilter/bin/python3"
    ).stdout.split()
    assert links == ["/opt/zivmilter/bin/zivmilter", "/usr/bin/python3.11"], links
    for unit in UNITS:
        installed.run(f"test -f /lib/systemd/system/{unit}")
    installed.run("test -f /usr/share/doc/zivmilter/README.md")
    # Installed, not enabled: the example configuration is the admin's to edit first.
    enabled = installed.run("systemctl is-enabled zivmilter.service", check=False).stdout
    assert enabled.strip() == "disabled", enabled


def test_check_config(installed: BootedRoot) -> None:
    proc = installed.run(f"zivmilter check-config {CONFIG}", check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)


def test_units_verify_clean(installed: BootedRoot) -> None:
    names = " ".join(f"/lib/systemd/system/{u}" for u in UNITS)
    proc = installed.run(f"systemd-analyze verify {names}", check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), proc


def test_services_start_and_doctor_passes_store_checks(installed: BootedRoot) -> None:
    installed.run("systemctl start zivmilter.service zivmilter-portal.service", timeout=180)
    for unit in ("zivmilter.service", "zivmilter-portal.service"):
        state = installed.run(f"systemctl show {unit} -p ActiveState,SubState").stdout.split()
        assert state == ["ActiveState=active", "SubState=running"], (unit, state)
    checks = doctor(installed)
    for check in ("key-file", "store", "milter-answers", "portal"):
        assert checks[check]["ok"] is True, checks[check]
    assert checks["smtpd-milters"]["ok"] is False  # Postfix has not been told of the milter
    # The postinst compiled the byte code (the services could not write it: ProtectSystem).
    installed.run(
        "test -f /opt/zivmilter/lib/python3.11/site-packages/zivmilter/__pycache__/"
        "__init__.cpython-311.pyc"
    )


def test_upgrade_restarts_what_runs(installed: BootedRoot) -> None:
    """Reinstalling runs the upgrade path: prerm upgrade, unpack, postinst configure OLD."""
    before = installed.run("systemctl show zivmilter.service -p MainPID --value").stdout.strip()
    installed.run("apt-get install -y -q --reinstall ./zivmilter_*.deb", timeout=600)
    for unit in ("zivmilter.service", "zivmilter-portal.service"):
        active = installed.run(f"systemctl is-active {unit}", check=False).stdout.strip()
        assert active == "active", (unit, active)
    after = installed.run("systemctl show zivmilter.service -p MainPID --value").stdout.strip()
    assert after not in ("0", before), (before, after)
    installed.run(
        "test -f /opt/zivmilter/lib/python3.11/site-packages/zivmilter/__pycache__/"
        "__init__.cpython-311.pyc"
    )


def test_remove_keeps_store_key_and_config(installed: BootedRoot) -> None:
    key_before = installed.run(f"sha256sum {KEY}").stdout
    installed.run("apt-get remove -y -q zivmilter", timeout=300)
    # /opt/zivmilter entirely: the prerm removed the byte code dpkg does not know of.
    for gone in ("/opt/zivmilter", "/usr/bin/zivmilter", "/lib/systemd/system/zivmilter.service"):
        assert installed.run(f"test -e {gone}", check=False).returncode == 1, gone
    # The services stopped with their files.
    active = installed.run("systemctl is-active zivmilter.service", check=False).stdout
    assert active.strip() == "inactive", active
    assert installed.run(f"sha256sum {KEY}").stdout == key_before
    assert installed.run("ls /var/lib/zivmilter").stdout.split(), "the store is gone"
    assert stat(installed, "/var/lib/zivmilter") == "zivmilter:zivmilter 700"
    installed.run(f"test -f {CONFIG}")  # remove keeps conffiles
    installed.run("getent passwd zivmilter")


def test_purge_removes_the_configuration_only(installed: BootedRoot) -> None:
    key_before = installed.run(f"sha256sum {KEY}").stdout
    store_before = installed.run("ls /var/lib/zivmilter").stdout
    installed.run("apt-get purge -y -q zivmilter", timeout=300)
    assert installed.run(f"test -e {CONFIG}", check=False).returncode == 1
    overrides = installed.run("dpkg-statoverride --list", check=False).stdout
    assert "/etc/zivmilter" not in overrides, overrides
    status = installed.run("dpkg-query -W -f='${db:Status-Status}' zivmilter", check=False)
    assert status.stdout in ("", "not-installed"), status
    assert installed.run(f"sha256sum {KEY}").stdout == key_before
    assert installed.run("ls /var/lib/zivmilter").stdout == store_before


def test_reinstall_keeps_the_key_and_opens_the_store(installed: BootedRoot) -> None:
    key_before = installed.run(f"sha256sum {KEY}").stdout
    installed.run("apt-get install -y -q ./zivmilter_*.deb", timeout=600)
    assert installed.run(f"sha256sum {KEY}").stdout == key_before
    assert stat(installed, CONFIG) == "root:zivmilter 640"
    checks = doctor(installed)
    assert checks["store"]["ok"] is True, checks["store"]
