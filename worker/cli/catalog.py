"""`backfill list`, `check` and `verify`: what the registered backfills would do."""

from __future__ import annotations

import click

from backfills.operations import check as run_check
from backfills.operations import count_remaining, count_remaining_if_present, parse_tenant
from worker.cli.common import EXIT_FAILURE, CliState, command_errors, echo_json, fail, pass_state
from worker.cli.options import options_from, run_options

__all__ = ["COMMANDS"]


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
@pass_state
@command_errors
def list_backfills(state: CliState, as_json: bool) -> None:
    """Registered backfills: name, table, description, rows remaining."""
    rows = [{"name": d.name, "table": d.table, "description": d.description,
             "tenant_scopable": d.tenant_scopable,
             "rows_remaining_estimate": count_remaining_if_present(state.engine, d)} for d in state.registry]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        remaining = row["rows_remaining_estimate"]
        todo = f"{remaining:>12,} rows to do" if remaining is not None else f"{'(not in the schema)':>23}"
        click.echo(f"{row['name']:<26} {row['table']:<16} {todo}  {row['description']}")


@click.command("check")
@click.argument("name")
@run_options(enqueue_only=False)
@pass_state
@command_errors
def check(state: CliState, /, name: str, tenant: str | None, **values: object) -> None:
    """Pre-flight: rows to do, rows that will fail and why, the plan, a predicted duration."""
    report = run_check(state.engine, state.registry, name, options_from(values), tenant)
    click.echo(f"backfill {report.backfill}: {report.rows_to_do:,} rows to do")
    if report.failing:
        total = sum(n for _, n, _ in report.failing)
        click.echo(f"{total:,} rows will fail (recorded as row errors, left as they are):")
        for reason, rows, example in report.failing[:20]:
            click.echo(f"  {rows:>8,}  {reason}  (e.g. key {example})")
    else:
        click.echo("no row is known to fail")
    click.echo(f"batch order: {report.order} ({report.order_reason})")
    click.echo("batch statement plan:")
    for line in report.plan:
        click.echo(f"  {line}")
    if report.sample_error:
        click.echo(f"a sample batch failed on a row's data (a run isolates such rows as row errors): "
                   f"{report.sample_error}")
    if report.sample_seconds:
        ms = ", ".join(f"{s * 1000:.0f} ms" for s in report.sample_seconds)
        click.echo(f"{report.sample_batches} sample batch(es), rolled back: {ms}")
    if report.predicted_seconds is not None:
        click.echo(f"predicted duration: {report.predicted_seconds:.0f} s")


@click.command("verify")
@click.argument("name")
@click.option("--tenant", help="count only this tenant's rows.")
@pass_state
@command_errors
def verify(state: CliState, name: str, tenant: str | None) -> None:
    """Count rows that still need NAME; exit 0 only when none do."""
    remaining = count_remaining(state.engine, state.registry.get(name), parse_tenant(tenant))
    click.echo(str(remaining))
    if remaining:
        raise fail(EXIT_FAILURE, "")


COMMANDS = [list_backfills, check, verify]
