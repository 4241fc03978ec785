"""`backfill exporter`: serve Prometheus metrics on /metrics (see `monitoring.exporter`)."""

from __future__ import annotations

import signal

import click

from monitoring.exporter import DEFAULT_HOST, DEFAULT_PORT, Exporter, MetricsServer
from worker.cli.common import CliState, command_errors, pass_state
from worker.runtime import Runtime, exporter_profile

__all__ = ["COMMANDS"]


def _tables(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    tables = tuple(t.strip() for t in value.split(",") if t.strip())
    if not tables:
        raise click.BadParameter("give at least one table name", param_hint="--tables")
    return tables


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command("exporter")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=DEFAULT_PORT, show_default=True,
              help="TCP port to serve /metrics on.")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="address to bind (0.0.0.0 to be reachable from other machines).")
@click.option("--tables", help="comma-separated tables whose lock waits to report, besides those of active "
                               "runs [default: the tables of every registered backfill].")
@click.option("--timeout", "timeout_ms", type=click.IntRange(min=50), default=1000, show_default=True,
              help="statement timeout of each database reading, in milliseconds.")
@pass_state
@command_errors
def exporter(state: CliState, port: int, host: str, tables: str | None, timeout_ms: int) -> None:
    """Serve Prometheus metrics on /metrics: the workers' counters and live database readings."""
    settings = state.settings
    settings.require_database()
    settings.require_redis()
    runtime = Runtime.from_settings(settings, exporter_profile(timeout_ms))
    service = Exporter(runtime.engine, runtime.redis, settings.namespace, runtime.registry, _tables(tables),
                       timeout_ms)
    server = MetricsServer(service.metrics, host, port)
    click.echo(f"serving metrics on {server.url}", err=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        service.close()


COMMANDS = [exporter]
