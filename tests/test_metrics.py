"""The metrics module's promises: hooks do nothing until enabled, label values stay in their
fixed sets, and the Grafana dashboard asks only for metrics the code exports.

The counts after real traffic are checked in tests/integration/test_metrics.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zivmilter import metrics
from zivmilter.core import config as config_mod

DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "zivmilter.json"


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_m", None)


def test_hooks_do_nothing_until_enabled(fresh: None) -> None:
    metrics.message("secured", 0.0)
    metrics.recipients([("sms", "notification", "")])
    with metrics.store_commit():
        pass
    metrics.store_batch(3)
    assert not metrics.enabled()


def test_labels_outside_their_sets_count_as_other(fresh: None) -> None:
    metrics.enable()
    metrics.recipients([("bob@example.org", "notification", "partner.example")])
    metrics.verification("<msg-id@x>", "ok")
    body, _ = metrics.exposition()
    labels = {
        (s.name, tuple(sorted(s.labels.items())))
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name.startswith("zivmilter_")
    }
    assert (
        "zivmilter_recipients_total",
        (("delivery", "notification"), ("level", "other"), ("method", "other")),
    ) in labels
    assert "@" not in body.decode() and "example" not in body.decode()


def test_the_dashboard_uses_only_exported_metrics(fresh: None) -> None:
    metrics.enable()
    assert metrics._m is not None
    names = {
        family.name + suffix
        for family in metrics._m.registry.collect()
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    # the maintenance gauges come from node_exporter's textfile collector
    names |= {"zivmilter_maintenance_last_run_timestamp_seconds", "zivmilter_maintenance_items"}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"zivmilter_\w+", target["expr"])
    }
    assert used and used <= names, used - names


def test_metrics_keys_off_when_empty_and_paths_relative_to_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "z.yaml"
    cfg.write_text("organization: {domains: [a.example]}\nmetrics: {textfile: ''}\n")
    assert config_mod.load(str(cfg)).metrics.textfile == ""  # off, not the config's folder
    cfg.write_text("organization: {domains: [a.example]}\nmetrics: {textfile: z.prom}\n")
    assert config_mod.load(str(cfg)).metrics.textfile == str(tmp_path / "z.prom")


def test_maintenance_gauges_for_the_textfile_collector(tmp_path: Path) -> None:
    path = tmp_path / "zivmilter.prom"
    metrics.write_textfile(str(path), {"expired": 3, "replies_failing": 1})
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for f in text_string_to_metric_families(path.read_text())
        for s in f.samples
    }
    assert samples[("zivmilter_maintenance_items", (("kind", "expired"),))] == 3
    assert samples[("zivmilter_maintenance_items", (("kind", "replies_failing"),))] == 1
    assert samples[("zivmilter_maintenance_last_run_timestamp_seconds", ())] > 1.7e9
    metrics.write_textfile("", {"expired": 1})  # off: nothing written, no error
