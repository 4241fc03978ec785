"""`backfill migrate up|down|status|plan|lint`."""

from __future__ import annotations

from pathlib import Path

import click

from backfills.operations import RegistryGate
from migrations.executor import MigrationRunner, RunnerOptions
from migrations.files import SQL_DIR, load_migrations
from migrations.lint import lint_sql
from migrations.planner import status_rows
from worker.cli.common import EXIT_BAD_INPUT, CliState, command_errors, echo_json, fail, pass_state

__all__ = ["COMMANDS"]


def _runner(state: CliState, lock_timeout: str = "2s", max_tries: int = 10) -> MigrationRunner:
    return MigrationRunner(
        state.engine, load_migrations(), gate=RegistryGate(state.engine, state.registry),
        options=RunnerOptions(lock_timeout=lock_timeout, max_tries=max_tries),
        log=lambda line: click.echo(line),
    )


@click.group("migrate")
def migrate() -> None:
    """Apply, revert, inspect and lint schema migrations (DDL is never run by the worker)."""


_lock_timeout = click.option("--lock-timeout", default="2s", show_default=True,
                             help="lock_timeout for each DDL statement; it is retried after a back-off.")
_max_tries = click.option("--max-tries", type=click.IntRange(min=1), default=10, show_default=True,
                          help="tries per migration when a lock cannot be had in time.")


@migrate.command("up")
@click.option("--to", "target", metavar="VERSION", help="stop after this version (e.g. 016).")
@_lock_timeout
@_max_tries
@pass_state
@command_errors
def up(state: CliState, target: str | None, lock_timeout: str, max_tries: int) -> None:
    """Apply pending migrations in order."""
    applied = _runner(state, lock_timeout, max_tries).up(target)
    click.echo(f"{len(applied)} migration(s) applied" if applied else "nothing to apply: the schema is up to date")


@migrate.command("down")
@click.argument("version")
@_lock_timeout
@_max_tries
@pass_state
@command_errors
def down(state: CliState, version: str, lock_timeout: str, max_tries: int) -> None:
    """Revert applied migrations down to and including VERSION."""
    reverted = _runner(state, lock_timeout, max_tries).down(version)
    click.echo(f"{len(reverted)} migration(s) reverted" if reverted else f"nothing to revert at or above {version}")


@migrate.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
@pass_state
@command_errors
def status(state: CliState, as_json: bool) -> None:
    """Every migration: applied or not, when, and which backfill it waits on."""
    runner = _runner(state)
    rows = status_rows(runner.files, runner.applied())
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        mark = "applied" if row["applied"] else "pending"
        when = row["applied_at"] or ""
        gate = f"  requires-backfill: {', '.join(row['requires_backfill'])}" if row["requires_backfill"] else ""  # type: ignore[arg-type]
        click.echo(f"{row['version']}  {mark:<8} {row['name']:<42} {when}{gate}")


@migrate.command("plan")
@click.option("--to", "target", metavar="VERSION", help="stop after this version.")
@pass_state
@command_errors
def plan(state: CliState, target: str | None) -> None:
    """Print the SQL that `up` would run."""
    steps = _runner(state).plan(target)
    if not steps:
        click.echo("-- nothing to apply")
    for step in steps:
        mode = "transaction" if step.transactional else "no transaction (statement by statement)"
        click.echo(f"-- ===== {step.filename} [{mode}] =====")
        click.echo(step.sql.rstrip() + "\n")


@migrate.command("lint")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@command_errors
def lint(files: tuple[Path, ...]) -> None:
    """Flag unsafe DDL (exit 2 when anything is flagged); default: every shipped migration."""
    paths = list(files) or sorted(SQL_DIR.glob("*.sql"))
    findings = [f for path in paths for f in lint_sql(path.read_text(), str(path))]
    for finding in findings:
        click.echo(str(finding))
    if findings:
        raise fail(EXIT_BAD_INPUT, f"{len(findings)} unsafe statement(s) in {len(paths)} file(s)")
    click.echo(f"{len(paths)} file(s) checked: no unsafe DDL")


COMMANDS = [migrate]
