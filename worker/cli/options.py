"""The run options shared by `enqueue` and `check`, validated by click's types."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from backfills.options import ORDERS
from backfills.runs import RunOptions

__all__ = ["run_options", "options_from"]

_POSITIVE_INT = click.IntRange(min=1)
_NON_NEGATIVE = click.FloatRange(min=0)
_POSITIVE = click.FloatRange(min=0, min_open=True)
_FIELDS = ("batch_size", "sub_batch_size", "sleep", "max_rows_per_second", "target_batch_seconds",
           "lock_timeout", "statement_timeout", "max_replication_lag", "max_row_errors", "partitions",
           "max_latency_ratio", "order")


def run_options(enqueue_only: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command with the run options of SPEC §3 (`--dry-run` only on enqueue)."""
    specs = [
        click.option("--batch-size", type=_POSITIVE_INT, help="rows per batch [default: 10000]."),
        click.option("--sub-batch-size", type=_POSITIVE_INT,
                     help="rows per transaction within a batch: a row stays locked for one of these, "
                          "not a whole batch [default: 1000, or the whole batch with --max-latency-ratio 0]."),
        click.option("--sleep", type=_NON_NEGATIVE, help="seconds between batches [default: 0.1]."),
        click.option("--max-rows-per-second", type=_POSITIVE, help="rate limit shared by every worker of the run."),
        click.option("--target-batch-seconds", type=_POSITIVE, help="adapt the batch size toward this duration."),
        click.option("--lock-timeout", type=_POSITIVE, help="seconds a batch may wait for a row lock [default: 2]."),
        click.option("--statement-timeout", type=_POSITIVE, help="seconds a batch may run [default: 30]."),
        click.option("--max-replication-lag", type=_POSITIVE, help="pause above this standby lag [default: 10]."),
        click.option("--max-latency-ratio", type=_NON_NEGATIVE,
                     help="foreground guard: slow down, then pause, above this ratio of the idle latency; "
                          "0 turns it off [default: 1.5]."),
        click.option("--tenant", help="only this tenant's rows (a UUID)."),
        click.option("--partitions", type=click.IntRange(1, 64), help="parallel key ranges [default: 1]."),
        click.option("--order", type=click.Choice(ORDERS),
                     help="how batches walk the table: key ranges or heap block ranges [default: auto]."),
        click.option("--max-row-errors", type=click.IntRange(min=0), help="past this many the run fails [default: 1000]."),
    ]
    if enqueue_only:
        specs.append(click.option("--dry-run", is_flag=True, help="only check, like `backfill check`."))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for spec in reversed(specs):
            fn = spec(fn)
        return fn

    return decorate


def options_from(values: Mapping[str, object]) -> RunOptions:
    """RunOptions from the given command-line values (defaults for the rest)."""
    given = {k: values[k] for k in _FIELDS if values.get(k) is not None}
    return RunOptions().replace(**given)
