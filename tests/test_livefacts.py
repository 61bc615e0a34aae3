"""The milter's live facts: IDD from the configuration and the store (`zivmilter idd`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.fakes import make_config
from tests.harness.cli import zivmilter_in_process
from zivmilter import crypto
from zivmilter.core.facts import with_config
from zivmilter.mta.livefacts import LiveFacts
from zivmilter.store import SqliteStore

ROOT = Path(__file__).parent.parent


def test_idd_from_config_and_store_refreshed(tmp_path: Path) -> None:
    crypto.keygen(str(tmp_path / "k"))
    store = SqliteStore.open(str(tmp_path / "s"), crypto.load_kek(str(tmp_path / "k")))
    now = [0.0]
    cfg = make_config({"idd": {"domains": ["conf.example"]}})
    facts = with_config(LiveFacts(cfg, store, None, lambda: now[0]), cfg)
    assert facts.idd_enabled("conf.example") and not facts.idd_enabled("store.example")
    assert store.set_idd_domain("store.example", True)
    assert not store.set_idd_domain("store.example", True)  # already there
    assert not facts.idd_enabled("store.example")  # read at most once a minute
    now[0] += 61
    assert facts.idd_enabled("store.example")
    assert store.set_idd_domain("store.example", False)
    now[0] += 61
    assert not facts.idd_enabled("store.example")
    assert facts.transport("x.example").level.value == "none"  # no prober: the safe side
    store.close()


def test_idd_command(tmp_path: Path) -> None:
    key = tmp_path / "store.key"
    crypto.keygen(str(key))
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "organization: {domains: [h.example]}\nidd: {domains: [conf.example]}\n"
        f"store: {{path: {tmp_path / 'store'}, key_file: {key}}}\n"
    )

    def idd(*args: str) -> subprocess.CompletedProcess[str]:
        return zivmilter_in_process("idd", *args, "--config", str(cfg))

    assert idd("add", "Hospital.EXAMPLE").stdout.strip() == "hospital.example: added"
    assert idd("list").stdout.splitlines() == ["conf.example\tconfig", "hospital.example\tstore"]
    assert idd("remove", "hospital.example").stdout.strip() == "hospital.example: removed"
    bad = idd("add", "not a domain")
    assert bad.returncode == 2 and "not a domain" in bad.stderr and "Traceback" not in bad.stderr
