"""`enqueue`, `status`, `pause`/`resume`/`cancel`, `set`, `wait`, `errors`, `retry-errors`."""

from __future__ import annotations

import time

import click

from backfills import operations as ops
from backfills.states import TERMINAL, RunState
from backfills.status import read_status
from worker.cli.common import (EXIT_FAILURE, EXIT_OK, EXIT_ROW_ERRORS, EXIT_TIMEOUT, CliState, command_errors,
                               echo_json, fail, pass_state)
from worker.cli.options import options_from, run_options
from worker.cli.progress import render_line, watch

__all__ = ["COMMANDS"]

_WAIT_EXIT = {RunState.SUCCEEDED: EXIT_OK, RunState.COMPLETED_WITH_ERRORS: EXIT_ROW_ERRORS,
              RunState.FAILED: EXIT_FAILURE, RunState.CANCELLED: EXIT_FAILURE}


@click.command("enqueue")
@click.argument("name")
@run_options(enqueue_only=True)
@pass_state
@command_errors
def enqueue(state: CliState, /, name: str, tenant: str | None, dry_run: bool, **values: object) -> None:
    """Create a run of NAME and hand it to the workers; the run id is the last line."""
    options = options_from(values)
    if dry_run:
        from worker.cli.catalog import check
        click.get_current_context().invoke(check, name=name, tenant=tenant, **values)
        return
    run = ops.enqueue(state.resources, name, options, tenant=tenant)
    scope = f" for tenant {run.tenant}" if run.tenant else ""
    click.echo(f"queued {run.backfill}{scope}: ~{run.rows_estimate or 0:,} rows, batches of "
               f"{options.batch_size:,}; watch it with `backfill status {run.id} --watch`")
    click.echo(run.id)


@click.command("status")
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
@click.option("--watch", "live", is_flag=True, help="live progress bars until the runs end (Ctrl-C to stop).")
@pass_state
@command_errors
def status(state: CliState, run_id: str | None, as_json: bool, live: bool) -> None:
    """All runs, or one run: progress, rate, ETA and throttle reason."""
    res = state.resources
    if live:
        watch(res, run_id)
        return
    runs = [res.store.get(run_id)] if run_id else res.store.list()
    statuses = [read_status(run, res.control(run.id)) for run in runs]
    if as_json:
        data = [s.to_json() for s in statuses]
        echo_json(data[0] if run_id else data)
        return
    if not statuses:
        click.echo("no runs yet: start one with `backfill enqueue NAME`")
    for status_ in statuses:
        click.echo(render_line(status_))
    if run_id:
        click.echo(f"  order: {statuses[0].run.order} ({statuses[0].run.order_reason or 'not recorded'})")
        for event in statuses[0].events:
            click.echo(f"  {event}")


def _control(command: str):  # type: ignore[no-untyped-def]
    @click.command(command)
    @click.argument("run_id")
    @pass_state
    @command_errors
    def control(state: CliState, run_id: str) -> None:
        run = ops.control_run(state.resources, run_id, command)
        click.echo(f"run {run.id} is {run.state}")

    control.help = {"pause": "Pause RUN_ID before its next batch.",
                    "resume": "Resume a paused RUN_ID.",
                    "cancel": "Cancel RUN_ID before its next batch (rows done stay done)."}[command]
    return control


@click.command("set")
@click.argument("run_id")
@click.option("--batch-size", type=click.IntRange(min=1), help="rows per batch.")
@click.option("--sleep", type=click.FloatRange(min=0), help="seconds between batches.")
@click.option("--max-rows-per-second", type=click.FloatRange(min=0, min_open=True), help="rate limit.")
@pass_state
@command_errors
def set_(state: CliState, run_id: str, batch_size: int | None, sleep: float | None,
         max_rows_per_second: float | None) -> None:
    """Retune a live run; takes effect before its next batch."""
    run = ops.retune(state.resources, run_id, batch_size=batch_size, sleep=sleep,
                     max_rows_per_second=max_rows_per_second)
    o = run.options
    click.echo(f"run {run.id}: batch size {o.batch_size:,}, sleep {o.sleep}s, "
               f"max rows/s {o.max_rows_per_second or 'unlimited'}")


@click.command("wait")
@click.argument("run_id")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="give up after this many seconds (exit 124).")
@pass_state
@command_errors
def wait(state: CliState, run_id: str, timeout: float | None) -> None:
    """Block until RUN_ID ends: exit 0 succeeded, 3 completed_with_errors, 1 failed/cancelled, 124 timeout."""
    store = state.resources.store
    deadline = None if timeout is None else time.monotonic() + timeout
    run = store.get(run_id)
    while run.state not in TERMINAL:
        if deadline is not None and time.monotonic() >= deadline:
            raise fail(EXIT_TIMEOUT, f"run {run_id} is still {run.state} after {timeout:g}s")
        time.sleep(0.5)
        run = store.get(run_id)
    click.echo(f"run {run.id} {run.state}: {run.rows_processed:,} rows changed, {run.row_errors:,} row errors")
    if run.last_error:
        click.echo(f"reason: {run.last_error}", err=True)
    raise fail(_WAIT_EXIT[run.state], "")


@click.command("errors")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
@click.option("--limit", type=click.IntRange(min=1), help="show at most this many.")
@pass_state
@command_errors
def errors(state: CliState, run_id: str, as_json: bool, limit: int | None) -> None:
    """The rows of RUN_ID that could not be changed, with the reason."""
    store = state.resources.store
    store.get(run_id)
    rows = store.row_errors(run_id, limit)
    if as_json:
        echo_json([{"key": r.key[0] if len(r.key) == 1 else r.key, "error": r.error} for r in rows])
        return
    if not rows:
        click.echo(f"run {run_id} has no row errors")
    for r in rows:
        key = r.key[0] if len(r.key) == 1 else ",".join(r.key)
        click.echo(f"{key}  {r.error}")


@click.command("retry-errors")
@click.argument("run_id")
@pass_state
@command_errors
def retry_errors(state: CliState, run_id: str) -> None:
    """A new run over just the rows that failed in RUN_ID; its id is the last line."""
    run = ops.retry_errors(state.resources, run_id)
    click.echo(f"queued {run.backfill} over the {run.rows_estimate or 0:,} failed rows of {run_id}")
    click.echo(run.id)


COMMANDS = [enqueue, status, _control("pause"), _control("resume"), _control("cancel"), set_, wait, errors,
            retry_errors]
