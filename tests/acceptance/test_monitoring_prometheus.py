"""The whole monitoring path with real components: `backfill worker` processes (three
prefork children, each recycled after every slice) run backfills on a primary with a
streaming standby; `backfill exporter` serves the metrics; a real Prometheus scrapes it
every second and evaluates the shipped alert rules.

Every PromQL expression of the Grafana dashboard is evaluated through Prometheus's HTTP
API during the run and must return data; the alerts' conditions are induced for real (a
run with row errors, a failed run, sessions waiting on a lock a backfill session holds)
and must show up as alerts; the other alerts' series must exist. The rows the metrics
count equal the rows the database changed.

With BACKFILL_SAMPLE_SCRAPE=PATH, the backfill_* lines of one mid-run scrape are written
to PATH (that is how monitoring/sample-scrape.txt was made).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
import yaml

from backfills.operations import RegistryGate
from backfills.registry import Registry
from core.db import create_db_engine
from core.settings import Settings
from migrations.executor import MigrationRunner
from migrations.files import load_migrations
from tests.integration.test_metrics_exporter import free_port, wait_for
from tests.support.replication import Pair, primary_and_standby
from tests.support.workers import REPO, WorkerProcess, run_cli, worker_env
from tests.unit.test_metrics_promtool import PROMETHEUS_DIR, prometheus_binary
from worker import sample_data

pytestmark = pytest.mark.slow

DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "backfills.json"
SLOW = "aois_area_ha_numeric"   # a long run with row errors
FAILING = "jobs_tenant_id"      # fails at once with --max-row-errors 0 (orphan jobs)


def http_get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


@dataclass
class Prometheus:
    """A real Prometheus process scraping one exporter every second."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict]:
        """The result of an instant query (raises on a PromQL error)."""
        body = json.loads(http_get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The value of a query returning one series (None when it returns none)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> dict[str, set[str]]:
        """Active alerts by name: the states (pending, firing) they are in."""
        body = json.loads(http_get(f"{self.url}/api/v1/alerts"))
        found: dict[str, set[str]] = {}
        for alert in body["data"]["alerts"]:
            found.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
        return found

    def rules(self) -> list[dict]:
        body = json.loads(http_get(f"{self.url}/api/v1/rules"))
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def start_prometheus(tmp: Path, exporter_port: int) -> Prometheus:
    """The shipped prometheus.yml, pointed at the exporter, scraping and evaluating every second."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [prometheus_binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    wait_for(lambda: _ready(prometheus), 30, "Prometheus to be ready")
    return prometheus


def _ready(prometheus: Prometheus) -> bool:
    if prometheus.process.poll() is not None:
        raise AssertionError(f"prometheus exited:\n{prometheus.log.read_text()[-3000:]}")
    try:
        return "Ready" in http_get(f"{prometheus.url}/-/ready", timeout=2)
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def pair() -> Iterator[Pair]:
    with primary_and_standby() as servers:
        yield servers


@dataclass
class Stack:
    """Everything the test talks to."""

    settings: Settings
    engine: sa.Engine
    prometheus: Prometheus
    exporter_url: str
    pair: Pair


@pytest.fixture
def stack(pair: Pair, settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """Sample data on the primary, three recycled worker children, the exporter and Prometheus."""
    own = replace(settings, database_url=pair.url(pair.primary))
    engine = create_db_engine(own.require_database(), pooled=False)
    MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()), log=lambda _: None).up("016")
    sample_data.load(engine, sample_data.SampleSpec(aois=20_000, jobs=2_000, tenants=4))
    worker = WorkerProcess(own, tmp_path / "worker.log", 3, {}, ("--max-tasks-per-child", "1")).start()
    port = free_port()
    with open(tmp_path / "exporter.log", "wb") as out:
        exporter = subprocess.Popen([sys.executable, "-m", "worker.cli", "exporter", "--port", str(port)],
                                    env=worker_env(own), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    prometheus = None
    try:
        prometheus = start_prometheus(tmp_path, port)
        wait_for(lambda: prometheus.value('up{job="backfill-exporter"}') == 1, 30, "Prometheus to scrape the exporter")
        yield Stack(own, engine, prometheus, f"http://127.0.0.1:{port}/metrics", pair)
    finally:
        if prometheus is not None:
            stop(prometheus.process)
        stop(exporter)
        worker.stop()
        engine.dispose()


def enqueue(settings: Settings, *args: str) -> str:
    result = run_cli(settings, "enqueue", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard, rows' nested panels included."""
    found = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            found.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def alert_rules() -> list[dict]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(backfill_[a-z_]+|up)\b(?=\s*[{\[)]|\s*$|\s)", expr))


def save_sample(scrape: str) -> None:
    path = os.environ.get("BACKFILL_SAMPLE_SCRAPE")
    if path:
        Path(path).write_text("".join(line + "\n" for line in scrape.splitlines()
                                      if line.startswith("backfill_")))



def count(engine: sa.Engine, sql: str, **params: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), params).scalar_one())


@contextmanager
def lock_held_by_a_backfill_session(url: str) -> Iterator[None]:
    """A session named like a backfill's holds `aois` exclusively; an application session waits."""
    holder = psycopg.connect(url, application_name="backfill:lock-holder")
    holder.execute("LOCK TABLE aois IN ACCESS EXCLUSIVE MODE")
    waiter = psycopg.connect(url, autocommit=True, application_name="app")
    waiting = threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM aois"), daemon=True)
    waiting.start()
    try:
        yield
    finally:
        holder.rollback()
        waiting.join(15)
        holder.close()
        waiter.close()


def check_dashboard_and_alert_series(prometheus: Prometheus) -> None:
    """Every dashboard query returns data for the running backfill; every series an alert uses exists."""
    assert SLOW in {r["metric"]["backfill"] for r in prometheus.query("group by (backfill) (backfill_run_state)")}, \
        "the dashboard's template variable offers the backfill"
    for title, expr in dashboard_exprs():
        query = expr.replace("$backfill", SLOW).replace("$__rate_interval", "10s")
        assert prometheus.query(query), f"dashboard panel {title!r} shows no data: {query}"
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            assert prometheus.query(f"count({name})"), f"alert {rule['alert']} uses {name}, which has no series"


def test_dashboard_and_alerts_tell_the_truth_about_a_real_run(stack: Stack) -> None:
    s, prometheus, primary = stack.settings, stack.prometheus, stack.settings.require_database()
    failing = enqueue(s, FAILING, "--max-row-errors", "0", "--batch-size", "500", "--sleep", "0",
                      "--max-latency-ratio", "0")
    assert run_cli(s, "wait", failing, "--timeout", "60", timeout=90).returncode == 1
    slow = enqueue(s, SLOW, "--batch-size", "250", "--sleep", "0", "--max-rows-per-second", "400",
                   "--partitions", "3", "--max-replication-lag", "300")  # guard on: its panel must show data
    wait_for(lambda: (prometheus.value(f'backfill_rows_processed_total{{backfill="{SLOW}"}}') or 0) > 0
         and prometheus.value(f'backfill_eta_seconds{{backfill="{SLOW}"}}') is not None, 60, "the run to be seen")
    time.sleep(3)  # a few more scrapes, for rate()
    check_dashboard_and_alert_series(prometheus)

    with lock_held_by_a_backfill_session(primary):
        wait_for(lambda: "BackfillLockContention" in prometheus.alerts(), 30, "the lock contention alert")
        wait_for(lambda: (prometheus.value('backfill_lock_wait_max_seconds{table="aois"}') or 0) > 1
             and (prometheus.value('backfill_lock_waiters{table="aois"}') or 0) >= 1, 30, "lock waits to be seen")
        wait_for(lambda: (prometheus.value(f'backfill_lock_timeouts_total{{backfill="{SLOW}"}}') or 0) > 0, 30,
             "the run's batches to time out on the lock")
        save_sample(http_get(stack.exporter_url))
    wait_for(lambda: (prometheus.value(f'backfill_batches_total{{backfill="{SLOW}",outcome="retried"}}') or 0) > 0,
         30, "the lock-timed-out batches to be retried")

    stack.pair.pause_replay()
    try:
        wait_for(lambda: (prometheus.value("max(backfill_replication_lag_seconds)") or 0) > 1
             and (prometheus.value("max(backfill_replication_lag_bytes)") or 0) > 0, 60,
             "replication lag to grow while the standby's replay is paused")
    finally:
        stack.pair.resume_replay()

    assert run_cli(s, "set", slow, "--max-rows-per-second", "1000000").returncode == 0
    assert run_cli(s, "wait", slow, "--timeout", "120", timeout=180).returncode == 3  # completed_with_errors

    changed = count(stack.engine, "SELECT count(*) FROM aois WHERE area_ha_new IS NOT NULL")
    errors = count(stack.engine, "SELECT count(*) FROM backfill.row_errors WHERE run_id = CAST(:r AS uuid)", r=slow)
    jobs_changed = count(stack.engine, "SELECT count(*) FROM jobs WHERE tenant_id IS NOT NULL")
    assert changed > 19_000 and errors > 0
    expected = {f'backfill_rows_processed_total{{backfill="{SLOW}"}}': changed,
                f'backfill_row_errors_total{{backfill="{SLOW}"}}': errors,
                f'backfill_rows_processed_total{{backfill="{FAILING}"}}': jobs_changed}
    wait_for(lambda: all(prometheus.value(q) == v for q, v in expected.items()), 15,
         f"Prometheus to hold the exact counts {expected}")
    scraped = http_get(stack.exporter_url)
    assert f'backfill_rows_processed_total{{backfill="{SLOW}"}} {float(changed)}' in scraped

    wait_for(lambda: {"BackfillRowErrors", "BackfillRunFailed"} <= {n for n, states in prometheus.alerts().items()
                                                               if "firing" in states}, 30,
         "the row errors and run failed alerts to fire")
    # The run's state is sampled at a scrape: the one after `wait` returned may not have come yet.
    wait_for(lambda: prometheus.value(f'backfill_run_state{{backfill="{FAILING}",state="failed"}}') == 1
             and prometheus.value(f'backfill_run_state{{backfill="{SLOW}",state="completed_with_errors"}}') == 1,
             15, "the final run states to be scraped")
    assert all(rule["health"] == "ok" for rule in prometheus.rules()), prometheus.rules()
