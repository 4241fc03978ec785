"""`backfill demo`: the quickstart on embedded servers."""

from __future__ import annotations

from pathlib import Path

import click

from worker.cli.common import command_errors

__all__ = ["COMMANDS"]


@click.command("demo")
@click.option("--rows", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="AOIs in the sample data (jobs: half as many).")
@click.option("--database-url", help="use this PostgreSQL server (a fresh demo database is created on it).")
@click.option("--redis-url", help="use this Redis.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path(".demo"),
              show_default=True, help="where embedded servers keep their data.")
@click.option("--keep", is_flag=True, help="leave servers, worker and exporter running (for Prometheus/Grafana) "
                                           "until Ctrl-C.")
@command_errors
def demo(rows: int, database_url: str | None, redis_url: str | None, workdir: Path, keep: bool) -> None:
    """Embedded PostgreSQL and Redis, sample data with bad rows, the four backfills run by a
    real worker with live progress, the contract migrations gated on them, a summary."""
    from worker.demo import Demo, DemoOptions

    Demo(DemoOptions(rows=rows, database_url=database_url, redis_url=redis_url, workdir=workdir, keep=keep)).run()


COMMANDS = [demo]
