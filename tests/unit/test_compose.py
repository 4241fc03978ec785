"""docker-compose.yml, checked without a Docker engine: the commands are real `backfill`
commands with valid options, the settings are SPEC §2's, every mounted file exists, the
services wait for each other's health, and nothing listens beyond 127.0.0.1.
`docker compose config` runs too where the compose plugin is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import click
import pytest
import yaml

from core.settings import Settings
from worker.cli import main

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
APP_SERVICES = {"migrate", "worker", "exporter"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def resolve(group: click.Group, args: list[str]) -> click.Command:
    """The command `args` names under `group`, its arguments and options parsed by click."""
    assert args and args[0] in group.commands, f"`{' '.join(args)}`: {args[:1]} is not a command of {group.name}"
    command = group.commands[args[0]]
    if isinstance(command, click.Group):
        return resolve(command, args[1:])
    command.make_context(args[0], list(args[1:]))  # raises on an unknown option or a bad value
    return command


def test_the_stack_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "redis", "migrate", "worker", "exporter", "prometheus", "grafana"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["redis"]["command"][-2:] == ["--appendonly", "yes"]


def test_app_services_run_real_backfill_commands(services: dict[str, dict[str, Any]]) -> None:
    names = {}
    for name in APP_SERVICES:
        command = services[name]["command"]
        assert command[0] == "backfill", f"{name} does not run the backfill command"
        names[name] = resolve(main, command[1:]).name
    assert names == {"migrate": "up", "worker": "worker", "exporter": "exporter"}
    assert all(services[name]["build"] == "." for name in APP_SERVICES)
    assert (REPO / "Dockerfile").is_file()


def test_app_settings_are_the_spec_variables_pointing_at_the_stack(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL"} <= set(env)
        settings = Settings.from_env(env)
        assert urlparse(settings.require_database()).hostname == "postgres"
        assert urlparse(settings.require_redis()).hostname == "redis"
        assert urlparse(settings.require_database()).path == f"/{services['postgres']['environment']['POSTGRES_DB']}"


def test_every_mounted_file_exists(services: dict[str, dict[str, Any]]) -> None:
    mounts = [v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if v.startswith(".")]
    assert mounts, "the monitoring configuration is mounted"
    for source in mounts:
        assert (REPO / source).exists(), f"{source} is mounted but missing"


def test_grafana_and_prometheus_point_at_the_mounted_files_and_services(services: dict[str, dict[str, Any]]) -> None:
    grafana = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"] if v.startswith(".")}
    provider = yaml.safe_load((REPO / "monitoring/grafana/provisioning/dashboards/backfills.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == grafana["./monitoring/grafana/dashboards"]
    datasource = yaml.safe_load((REPO / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert urlparse(datasource["datasources"][0]["url"]).hostname == "prometheus"
    prometheus = yaml.safe_load((REPO / "monitoring/prometheus/prometheus.yml").read_text())
    mounted = {Path(v.split(":")[1]).name for v in services["prometheus"]["volumes"] if v.startswith(".")}
    assert set(prometheus["rule_files"]) <= mounted
    exporter = services["exporter"]["command"]
    port = exporter[exporter.index("--port") + 1]
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == [f"exporter:{port}"]
    assert exporter[exporter.index("--host") + 1] == "0.0.0.0", "reachable from the prometheus container"


def test_ports_are_published_on_localhost_only(services: dict[str, dict[str, Any]]) -> None:
    ports = [p for s in services.values() for p in s.get("ports", [])]
    assert ports
    assert all(isinstance(p, str) and p.startswith("127.0.0.1:") for p in ports), ports


def test_services_wait_for_what_they_need(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for needed, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits for {needed}'s health, which has no check"
            else:
                assert (needed, condition) == ("migrate", "service_completed_successfully"), (name, needed, rule)
    assert services["migrate"]["restart"] == "no"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    if subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the docker CLI has no compose plugin (`docker compose` is an unknown command)")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, check=False,
                            text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
