"""The `backfill` command line: thin commands over `backfills.operations` and `migrations`."""

from __future__ import annotations

import sys

import click

from core.settings import ConfigError, Settings
from worker.cli import catalog, demo, exporter, migrate, runs, serve
from worker.cli.common import EXIT_BAD_INPUT, CliState

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Online backfills on PostgreSQL: resumable, throttled batches run by Celery workers."""
    try:
        ctx.obj = CliState(Settings.from_env())
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)


for module in (migrate, catalog, runs, serve, exporter, demo):
    for command in module.COMMANDS:
        main.add_command(command)
