"""What the commands do, as plain functions over explicit resources.

The CLI (`worker.cli`) and the demo call these; they hold no state of their own.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import redis as redis_lib
import sqlalchemy as sa

from backfills.batch import BatchExecutor, Timeouts, error_text, is_data_error, read_key_columns
from backfills.batch import count_remaining as rows_needing
from backfills.block_batch import BlockExecutor
from backfills.blocks import build_blocks
from backfills.control import RunControl
from backfills.definition import Backfill
from backfills.keyset import KeyColumn, Scope, build
from backfills.order import OrderChoice, OrderUnavailable, block_parts, choose_order, read_order_readings
from backfills.stripes import read_stripe_count, stripes_reason
from backfills.partitions import part_ranges, read_bounds
from backfills.registry import Registry
from backfills.runs import Run, RunOptions, RunStore
from backfills.states import TERMINAL, RunState, check_transition

__all__ = ["Dispatch", "Resources", "RegistryGate", "BadInput", "count_remaining", "count_remaining_if_present",
           "enqueue", "check", "CheckReport", "control_run", "retune", "retry_errors"]

_GONE = ("42P01", "42703")  # undefined table, undefined column


class BadInput(ValueError):
    """The request cannot be done as asked (exit 2); nothing was written."""


class Dispatch(Protocol):
    """Queues one slice of a run part for the workers."""

    def __call__(self, run_id: str, part: int, lease_token: str | None = None) -> None:
        """Send the slice (handing on the part's lease when `lease_token` is given)."""


@dataclass(frozen=True)
class Resources:
    """What a command needs, built once by the caller's runtime."""

    namespace: str
    engine: sa.Engine
    redis: redis_lib.Redis
    registry: Registry
    dispatch: Dispatch

    @property
    def store(self) -> RunStore:
        """Run records."""
        return RunStore(self.engine)

    def control(self, run_id: str) -> RunControl:
        """Redis state of one run."""
        return RunControl(self.redis, self.namespace, run_id)


def parse_tenant(tenant: str | None) -> str | None:
    """A canonical tenant UUID, or BadInput for a malformed one."""
    if tenant is None:
        return None
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        raise BadInput(f"--tenant must be a UUID, got {tenant!r}") from None


def _scope_for(definition: Backfill, tenant: str | None) -> Scope:
    if tenant is not None and not definition.tenant_scopable:
        raise BadInput(f"backfill {definition.name} cannot be scoped to one tenant "
                       f"(its rows have no tenant column it can trust); run it without --tenant")
    return Scope(tenant=tenant)


def count_remaining(engine: sa.Engine, definition: Backfill, tenant: str | None = None) -> int:
    """Rows that still need `definition` (never filtered by RLS: our sessions are system admin)."""
    _scope_for(definition, tenant)
    return rows_needing(engine, definition, tenant)


def count_remaining_if_present(engine: sa.Engine, definition: Backfill) -> int | None:
    """Like `count_remaining`, but None when the backfill's table or column does not exist
    (its expand migration is not applied yet, or its contract migration has run: e.g. a
    copy's source table was dropped)."""
    try:
        return count_remaining(engine, definition)
    except sa.exc.ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) in _GONE:
            return None
        raise


@dataclass(frozen=True)
class RegistryGate:
    """The migration runner's backfill gate: `verify` as a count."""

    engine: sa.Engine
    registry: Registry

    def remaining(self, name: str) -> int:
        """Rows that still need backfill `name` (KeyError if unknown)."""
        return count_remaining(self.engine, self.registry.get(name))


def enqueue(res: Resources, name: str, options: RunOptions, tenant: str | None = None,
            parent_run_id: str | None = None) -> Run:
    """Create a run (refused if one is active) and hand it to the workers."""
    definition = res.registry.get(name)
    options.validate()
    tenant = parse_tenant(tenant)
    _scope_for(definition, tenant)
    estimate = (res.store.row_error_count(parent_run_id) if parent_run_id
                else count_remaining(res.engine, definition, tenant))
    with res.engine.connect() as conn:
        key = read_key_columns(conn, definition)
        choice = choose(conn, definition, key, options, retry=parent_run_id is not None)
        if choice.order == "physical":
            parts = block_parts(relation_blocks(conn, definition, key), options.partitions)
        else:
            parts = part_ranges(read_bounds(conn, definition, key, options.partitions))
    run = res.store.create(name, options, tenant=tenant, parent_run_id=parent_run_id, rows_estimate=estimate,
                           parts=parts, order=choice.order, order_reason=choice.reason)
    control = res.control(run.id)
    control.request("run")
    for part in run.parts:
        res.dispatch(run.id, part.part)
    return run


def choose(conn: sa.Connection, definition: Backfill, key: Sequence[KeyColumn], options: RunOptions,
           retry: bool = False) -> OrderChoice:
    """The run's batch order (`--order`), read from the table; BadInput when `physical`
    is asked for where it cannot work."""
    if retry:
        return OrderChoice("key", "key order: a retry run looks up the keys recorded as row errors")
    if definition.into is not None:
        if options.order == "physical":
            raise BadInput("--order physical cannot be used here: a copy backfill walks its source in key order")
        return OrderChoice("key", "key order: a copy backfill walks its source in key order")
    try:
        choice = choose_order(options.order, read_order_readings(conn, definition, [k.name for k in key]))
    except OrderUnavailable as exc:
        raise BadInput(str(exc)) from None
    if choice.order != "physical":
        return choice
    return OrderChoice(choice.order, f"{choice.reason}; {stripes_reason(read_stripe_count(conn, definition))}")


def relation_blocks(conn: sa.Connection, definition: Backfill, key: Sequence[KeyColumn]) -> int:
    """The table's size in blocks now."""
    return int(conn.execute(sa.text(build_blocks(definition, tuple(key)).relation_blocks())).scalar_one())


def control_run(res: Resources, run_id: str, command: str) -> Run:
    """pause, resume or cancel: the durable state first, then the Redis flag the workers
    read before every batch; resume queues the run again."""
    store = res.store
    run = store.get(run_id)
    target = {"pause": RunState.PAUSED, "resume": RunState.QUEUED, "cancel": RunState.CANCELLED}[command]
    if command == "resume" and run.state != RunState.PAUSED:
        raise BadInput(f"run {run_id} is {run.state}; only a paused run can be resumed")
    check_transition(run.state, target, run_id)
    run = store.transition(run_id, target)
    control = res.control(run_id)
    control.request({"pause": "pause", "resume": "run", "cancel": "cancel"}[command])
    if command == "resume":
        for part in run.parts:
            if not part.done:
                res.dispatch(run_id, part.part)
    return run


def retune(res: Resources, run_id: str, **changes: float | int | None) -> Run:
    """`set`: new batch size / sleep / rate for a live run, durable and live."""
    values = {k: v for k, v in changes.items() if v is not None}
    if not values:
        raise BadInput("nothing to set: give --batch-size, --sleep or --max-rows-per-second")
    run = res.store.get(run_id)
    if run.state in TERMINAL:
        raise BadInput(f"run {run_id} is {run.state}; there is nothing to retune")
    try:
        options = run.options.replace(**values)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    run = res.store.update_options(run_id, options)
    res.control(run_id).set_overrides(**values)
    return run


def retry_errors(res: Resources, run_id: str, options: RunOptions | None = None) -> Run:
    """A new run over just the rows that failed in `run_id`."""
    parent = res.store.get(run_id)
    if parent.state not in TERMINAL:
        raise BadInput(f"run {run_id} is {parent.state}; retry its errors once it has ended")
    if res.store.row_error_count(run_id) == 0:
        raise BadInput(f"run {run_id} has no row errors to retry")
    return enqueue(res, parent.backfill, options or parent.options, tenant=parent.tenant, parent_run_id=run_id)


@dataclass(frozen=True)
class CheckReport:
    """`check`: what a run would do, measured without changing anything."""

    backfill: str
    rows_to_do: int
    failing: list[tuple[str, int, str]]
    plan: list[str]
    sample_batches: int
    sample_seconds: list[float] = field(default_factory=list)
    predicted_seconds: float | None = None
    sample_error: str | None = None  # a sample batch failed on a row's data (a run bisects around it)
    order: str = "key"
    order_reason: str = ""


def check(engine: sa.Engine, registry: Registry, name: str, options: RunOptions, tenant: str | None = None,
          samples: int = 3) -> CheckReport:
    """Rows to do, rows that will fail and why, the batch plan, and a duration predicted
    from sample batches run in transactions that are rolled back."""
    definition = registry.get(name)
    options.validate()
    tenant = parse_tenant(tenant)
    scope = _scope_for(definition, tenant)
    todo = count_remaining(engine, definition, tenant)
    with engine.connect() as conn:
        key = read_key_columns(conn, definition)
        batch = build(definition, key, scope)
        failing = []
        if batch.invalid_summary():
            failing = [(r.reason, int(r.rows), r.example)
                       for r in conn.execute(sa.text(batch.invalid_summary() or ""), {"tenant": tenant})]
        choice = choose(conn, definition, key, options)
        explainer = _executor(engine, definition, key, scope, str(uuid.uuid4()), choice.order)
        explainer.begin_batch(conn, Timeouts(options.lock_timeout, options.statement_timeout))
        statement = explainer.next_statement(conn, None, options.batch_size)
        plan = ([r[0] for r in conn.execute(sa.text("EXPLAIN " + statement[0].text), statement[1])]
                if statement else ["(no rows: nothing to plan)"])
    seconds, sample_error = _sample(_executor(engine, definition, key, scope, str(uuid.uuid4()), choice.order),
                                    options, samples)
    predicted = None
    if seconds:
        commits = -(-todo // _sampled_rows(options)) if todo else 0
        batches = -(-todo // options.batch_size) if todo else 0
        predicted = commits * statistics.median(seconds) + batches * options.sleep
    return CheckReport(name, todo, failing, plan, len(seconds), seconds, predicted, sample_error, choice.order,
                       choice.reason)


def _executor(engine: sa.Engine, definition: Backfill, key: Sequence[KeyColumn], scope: Scope, run_id: str,
              order: str) -> BatchExecutor:
    if order == "physical":
        return BlockExecutor(engine, definition, key, scope, run_id, 0)
    return BatchExecutor(engine, definition, key, scope, run_id, 0)


def _sampled_rows(options: RunOptions) -> int:
    """Rows of one sampled statement: one sub-batch, as a run commits them."""
    return options.rows_per_transaction(options.batch_size)


def _sample(executor: BatchExecutor, options: RunOptions, samples: int) -> tuple[list[float], str | None]:
    """Time real sub-batches in transactions that are rolled back (nothing is kept, not even
    the throw-away run record the batch statement writes its progress to). A batch that
    fails on a row's data (e.g. a row a copy's target refuses) ends the sampling; its error
    is returned with the timings so far."""
    timings: list[float] = []
    engine, definition, run_id = executor.engine, executor.definition, executor.run_id
    timeouts = Timeouts(options.lock_timeout, options.statement_timeout)
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            RunStore(engine).create_scratch(conn, run_id, definition.name)
            executor.begin_batch(conn, timeouts)
            cursor = None
            for _ in range(samples):
                started = time.monotonic()
                statement = executor.next_statement(conn, cursor, _sampled_rows(options))
                if statement is None:
                    break
                try:
                    with conn.begin_nested():
                        row = conn.execute(*statement).one()
                except sa.exc.DBAPIError as exc:
                    if not is_data_error(exc):
                        raise
                    return timings, error_text(exc)
                timings.append(time.monotonic() - started)
                cursor = list(row.last_key)
        finally:
            trans.rollback()
    return timings, None
