"""The shipped Prometheus configuration and alert rules, checked by the real `promtool`:
`check config`, `check rules`, and the rules' unit tests (`test rules alerts_test.yml`).

Skipped with a clear reason when Prometheus is not installed, unless
BACKFILL_REQUIRE_PROMETHEUS=1 (CI), where a missing binary fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"


def prometheus_binary(name: str) -> str:
    """Path of `prometheus` or `promtool`; skip (or fail under BACKFILL_REQUIRE_PROMETHEUS=1) without it."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian/Ubuntu: apt-get install prometheus)"
    if os.environ.get("BACKFILL_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{message}, and BACKFILL_REQUIRE_PROMETHEUS=1 requires it")
    pytest.skip(f"{message}; set BACKFILL_REQUIRE_PROMETHEUS=1 to fail instead of skipping")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_binary("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True, timeout=60, check=False)


def test_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_unit_tests_that_see_it_fire() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    fired = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", []) if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", [])
             if not case["exp_alerts"]}
    assert alerts == fired, "every alert is seen firing in alerts_test.yml"
    assert alerts == quiet, "every alert is also seen not firing"
