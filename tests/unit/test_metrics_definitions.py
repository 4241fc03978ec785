"""The metrics contract (SPEC §6) and what queries it: names, types and labels exactly as
specified; the exposition of a scrape has those types; the dashboard and the alert rules
only use metrics that exist, and the dashboard's per-backfill panels follow its variable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from backfills.health import HealthReadings, LockReading, ReplicaReading
from monitoring import metrics as m
from monitoring.exporter import families
from monitoring.recorder import BackfillCounters
from monitoring.sampler import RunSample, Scrape

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "backfills.json"
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"

# SPEC §6, copied by hand: a rename in monitoring/metrics.py must fail here.
SPEC_6 = {
    "backfill_rows_processed_total": ("counter", ("backfill",)),
    "backfill_batches_total": ("counter", ("backfill", "outcome")),
    "backfill_batch_duration_seconds": ("histogram", ("backfill",)),
    "backfill_batch_size": ("gauge", ("backfill",)),
    "backfill_rows_remaining": ("gauge", ("backfill",)),
    "backfill_eta_seconds": ("gauge", ("backfill",)),
    "backfill_checkpoint_age_seconds": ("gauge", ("backfill",)),
    "backfill_run_state": ("gauge", ("backfill", "state")),
    "backfill_row_errors_total": ("counter", ("backfill",)),
    "backfill_lock_timeouts_total": ("counter", ("backfill",)),
    "backfill_throttled": ("gauge", ("backfill", "reason")),
    "backfill_foreground_latency_ratio": ("gauge", ("backfill",)),
    "backfill_replication_lag_seconds": ("gauge", ("replica",)),
    "backfill_lock_waiters": ("gauge", ("table",)),
    "backfill_lock_wait_max_seconds": ("gauge", ("table",)),
}


def test_spec_metrics_are_defined_exactly() -> None:
    assert {d.name: (d.kind, d.labels) for d in m.SPEC_METRICS} == SPEC_6
    assert set(m.OUTCOMES) == {"ok", "retried", "split", "failed"}
    assert set(m.RUN_STATES) == {"queued", "running", "paused", "succeeded", "completed_with_errors", "failed",
                                 "cancelled"}


def test_no_metric_is_labelled_by_run_or_key() -> None:
    labels = {label for d in m.ALL_METRICS for label in d.labels}
    assert labels <= {"backfill", "outcome", "state", "reason", "replica", "table"}
    assert all(d.name.startswith("backfill_") for d in m.ALL_METRICS)
    assert len({d.name for d in m.ALL_METRICS}) == len(m.ALL_METRICS)


def test_histogram_buckets_grow_and_end_at_infinity() -> None:
    bounds = m.BATCH_DURATION_BUCKETS
    assert list(bounds) == sorted(set(bounds)) and bounds[-1] == float("inf")


class _Fixed:
    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self):  # type: ignore[no-untyped-def]
        return families(self.scrape)


def exposition(scrape: Scrape) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, sample names) of the text a scrape exposes."""
    registry = CollectorRegistry()
    registry.register(_Fixed(scrape))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {f.name: (f.type, {s.name for s in f.samples}) for f in text_string_to_metric_families(text)}


def test_a_scrape_exposes_every_metric_with_its_type() -> None:
    counters = BackfillCounters.from_hash("aois_status", {"rows_processed": "5", "batches:ok": "1",
                                                          "duration:count": "1", "duration:le:0.05": "1",
                                                          "duration:sum": "0.04"})
    run = RunSample("aois_status", "running", 10, 15, 2.0, 100, 1.5, frozenset({"rate_limit"}), 1.2)
    health = HealthReadings((ReplicaReading("standby", None, 0),), (LockReading("aois", 1, 2.5, 1),), (), 0.0)
    exposed = exposition(Scrape([counters], [run], {"aois_status": "running"}, health, True, True, 0.01))
    for d in m.ALL_METRICS:
        family = d.name.removesuffix("_total") if d.kind == "counter" else d.name
        kind, samples = exposed[family]
        assert kind == d.kind, d.name
        assert set(d.sample_names) <= samples, (d.name, samples)


def test_an_empty_scrape_still_says_what_could_not_be_read() -> None:
    exposed = exposition(Scrape())
    assert exposed["backfill_exporter_database_up"][1] == {"backfill_exporter_database_up"}
    assert exposed["backfill_exporter_redis_up"][1] == {"backfill_exporter_redis_up"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict]) -> list[dict]:
    return [p for panel in panels for p in (panel, *_panels(panel.get("panels", [])))]


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])]


def _alert_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


SAMPLE_NAMES = {name for d in m.ALL_METRICS for name in d.sample_names}
BY_BACKFILL = {name for d in m.ALL_METRICS if "backfill" in d.labels for name in d.sample_names}


def _selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers) of every selector of `expr`."""
    return re.findall(r"\b(backfill_[a-z_]+)(\{[^}]*\})?", expr)


def test_dashboard_and_alerts_only_query_metrics_that_exist() -> None:
    for expr in _exprs() + _alert_exprs():
        for name, _ in _selectors(expr):
            assert name in SAMPLE_NAMES, f"{name} (in {expr}) is not a metric the exporter serves"


def test_per_backfill_panels_follow_the_template_variable() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["backfill"]["query"]["query"] == "label_values(backfill_run_state, backfill)"
    for expr in _exprs():
        for name, matchers in _selectors(expr):
            if name in BY_BACKFILL:
                assert 'backfill="$backfill"' in matchers, f"{expr} is not filtered by the chosen backfill"


def test_dashboard_covers_what_an_operator_needs() -> None:
    titles = {p["title"] for p in _panels(_dashboard()["panels"])}
    assert {"Progress", "Rows / s", "ETA", "Batch duration p50 / p99", "Batch size", "Throttle reasons",
            "Replication lag", "Lock waiters", "Longest lock wait", "Row errors", "Run state"} <= titles
    exprs = " ".join(_exprs())
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs


def test_every_query_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load((REPO / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            assert panel["datasource"]["uid"] == target["datasource"]["uid"] == uid, panel["title"]
    assert {v["datasource"]["uid"] for v in _dashboard()["templating"]["list"]} == {uid}
