"""Every bad input gets exit 2 (or 1 for a runtime failure), one readable sentence on
stderr, no traceback, and nothing written (SPEC §2, §3).

Each case runs the real `backfill` CLI in a subprocess against a database and a Redis
namespace of its own, so "nothing written" is checked case by case: the tool's tables
and every Redis key of the namespace are snapshotted before and after. The cases run
concurrently (one module-scoped fixture) to keep the file fast; each is its own test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import redis as redis_lib
import sqlalchemy as sa

from backfills.control import RunControl
from backfills.runs import RunOptions, RunStore
from core.db import create_db_engine, with_database
from core.settings import Settings
from tests.support import servers
from tests.support.workers import REPO, worker_env
from worker.embedded import free_port

UNKNOWN_RUN = "5a1e0000-0000-4000-8000-00000000dead"
TENANT = "0b9c5a34-1111-4222-8333-444455556666"
SECRET = "hunter2secret"
# How a fresh (queued) run reaches each state through allowed transitions.
PATH_TO = {"queued": [], "running": ["running"], "paused": ["paused"], "succeeded": ["running", "succeeded"],
           "failed": ["failed"], "cancelled": ["cancelled"]}


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]          # "{run}" stands for the id of the run made by `setup`
    code: int
    message: str                   # regex the error line must match ("{run}" as above)
    setup: str | None = None       # state of an aois_status run made before the command
    env: dict[str, str | None] = field(default_factory=dict)  # None: unset the variable
    db: bool = True                # whether the command can reach the case's database at all


def _closed_port() -> int:
    return free_port()


_DEAD_DB = f"postgresql://backfill:{SECRET}@127.0.0.1:{_closed_port()}/nowhere"
_DEAD_REDIS = f"redis://:{SECRET}@127.0.0.1:{_closed_port()}/0"
_RUN_COMMANDS = [("status",), ("pause",), ("resume",), ("cancel",), ("set", "--batch-size", "5"),
                 ("wait", "--timeout", "1"), ("errors",), ("retry-errors",)]


def _run_cmd(command: tuple[str, ...], run_id: str) -> tuple[str, ...]:
    return (command[0], run_id, *command[1:])


CASES = [
    # unknown backfill
    Case("enqueue-unknown-backfill", ("enqueue", "aois_stat"), 2,
         r"unknown backfill 'aois_stat'; did you mean 'aois_status'\?"),
    Case("check-unknown-backfill", ("check", "jobs_tenant"), 2, r"unknown backfill 'jobs_tenant'"),
    Case("verify-unknown-backfill", ("verify", "no_such_backfill"), 2, r"unknown backfill 'no_such_backfill'"),
    # unknown and malformed run ids
    *[Case(f"unknown-run-{c[0]}", _run_cmd(c, UNKNOWN_RUN), 2, rf"no run with id {UNKNOWN_RUN}")
      for c in _RUN_COMMANDS],
    *[Case(f"malformed-run-{c[0]}", _run_cmd(c, "not-a-uuid"), 2, r"no run with id not-a-uuid")
      for c in _RUN_COMMANDS if c[0] in ("status", "set")],
    # bad option values
    Case("batch-size-zero", ("enqueue", "aois_status", "--batch-size", "0"), 2, r"--batch-size"),
    Case("batch-size-not-a-number", ("enqueue", "aois_status", "--batch-size", "many"), 2, r"--batch-size"),
    Case("batch-size-too-big", ("enqueue", "aois_status", "--batch-size", "2000000"), 2,
         r"--batch-size must be at most"),
    Case("sleep-negative", ("enqueue", "aois_status", "--sleep", "-1"), 2, r"--sleep"),
    Case("sleep-not-a-number", ("enqueue", "aois_status", "--sleep", "soon"), 2, r"--sleep"),
    Case("tenant-malformed", ("enqueue", "aois_status", "--tenant", "not-a-uuid"), 2,
         r"--tenant must be a UUID"),
    Case("tenant-on-jobs-tenant-id", ("enqueue", "jobs_tenant_id", "--tenant", TENANT), 2,
         r"jobs_tenant_id cannot be scoped to one tenant"),
    # configuration and reachability
    Case("missing-database-url-enqueue", ("enqueue", "aois_status"), 2, r"DATABASE_URL is not set",
         env={"DATABASE_URL": None}, db=False),
    Case("missing-redis-url-enqueue", ("enqueue", "aois_status"), 2, r"REDIS_URL is not set",
         env={"REDIS_URL": None, "CELERY_BROKER_URL": None}),
    Case("unreachable-database-verify", ("verify", "aois_status"), 1, r"cannot connect to the database",
         env={"DATABASE_URL": _DEAD_DB}, db=False),
    Case("unreachable-redis-enqueue", ("enqueue", "aois_status"), 1, r"cannot connect to Redis",
         env={"REDIS_URL": _DEAD_REDIS}),
    # conflicting or impossible requests on existing runs
    Case("second-enqueue-while-queued", ("enqueue", "aois_status"), 2,
         r"aois_status already has an active run {run}", setup="queued"),
    Case("resume-running", ("resume", "{run}"), 2, r"run {run} is running", setup="running"),
    Case("resume-succeeded", ("resume", "{run}"), 2, r"run {run} is succeeded", setup="succeeded"),
    Case("set-on-finished-run", ("set", "{run}", "--batch-size", "5"), 2, r"run {run} is succeeded",
         setup="succeeded"),
    Case("set-nan-sleep-on-live-run", ("set", "{run}", "--sleep", "nan"), 2, r"--sleep must be", setup="running"),
    Case("cancel-failed", ("cancel", "{run}"), 2, r"run {run} is failed; it cannot become cancelled", setup="failed"),
    Case("retry-errors-of-active-run", ("retry-errors", "{run}"), 2, r"run {run} is queued", setup="queued"),
]


@dataclass
class Outcome:
    run_id: str | None
    proc: subprocess.CompletedProcess[str]
    db_before: object
    db_after: object
    redis_before: object
    redis_after: object


def _db_snapshot(engine: sa.Engine) -> object:
    with engine.connect() as conn:
        return [list(conn.execute(sa.text(sql)).all()) for sql in (
            ("SELECT id, backfill, state, options::text, tenant, parent_run_id, rows_estimate, last_error, "
             "started_at, finished_at, updated_at FROM backfill.runs ORDER BY id"),
            ("SELECT run_id, part, cursor::text, done, rows_processed, batches, updated_at FROM backfill.progress "
             "ORDER BY run_id, part"),
            "SELECT count(*) FROM backfill.row_errors",
            "SELECT version FROM schema_migrations ORDER BY version",
            "SELECT (SELECT count(*) FROM aois), (SELECT count(*) FROM jobs), (SELECT count(*) FROM tenants)",
        )]


def _redis_snapshot(client: redis_lib.Redis, namespace: str) -> object:
    return sorted((key, client.dump(key)) for key in client.scan_iter(f"{namespace}:*", count=1000))


def _env(settings: Settings, overrides: dict[str, str | None]) -> dict[str, str]:
    env = worker_env(settings)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env.pop("BACKFILL_DEBUG", None)
    return env


def _one(case: Case, db_url: str, engine: sa.Engine | None, client: redis_lib.Redis, redis_url: str,
         namespace: str) -> Outcome:
    run_id = None
    client.set(f"{namespace}:sentinel", "untouched")
    if case.setup is not None:
        assert engine is not None
        store = RunStore(engine)
        run_id = store.create("aois_status", RunOptions(batch_size=100, sleep=0)).id
        for step in PATH_TO[case.setup]:
            store.transition(run_id, step)
        RunControl(client, namespace, run_id).request("run")
    db_before = _db_snapshot(engine) if engine else None
    redis_before = _redis_snapshot(client, namespace)
    settings = Settings(database_url=db_url, redis_url=redis_url, broker_url=redis_url, namespace=namespace,
                        queue=f"{namespace}-q")
    args = [a.replace("{run}", run_id or "") for a in case.args]
    proc = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=_env(settings, case.env), cwd=REPO,
                          capture_output=True, text=True, timeout=90, check=False)
    return Outcome(run_id, proc, db_before, _db_snapshot(engine) if engine else None,
                   redis_before, _redis_snapshot(client, namespace))


def _lane(cases: list[Case], pg_admin_url: str, template: str, redis_url: str,
          cleanup: list[tuple[str | None, str]]) -> dict[str, Outcome]:
    """Cases run one after the other on one database of their own (snapshots are taken
    around each case, so "nothing written" is still checked case by case)."""
    db_name = servers.unique_name("clierr") if any(c.db for c in cases) else None
    cleanup.append((db_name, ""))
    db_url = servers.create_database(pg_admin_url, db_name, template=template) if db_name else \
        with_database(pg_admin_url, "postgres")
    engine = create_db_engine(db_url, pooled=False) if db_name else None
    client = redis_lib.Redis.from_url(redis_url)
    results = {}
    try:
        for case in cases:
            namespace = servers.unique_name("clierr")
            cleanup.append((None, namespace))
            results[case.id] = _one(case, db_url, engine, client, redis_url, namespace)
    finally:
        if engine is not None:
            engine.dispose()
        client.close()
    return results


@pytest.fixture(scope="module")
def outcomes(pg_admin_url: str, templates: dict[str, str], redis_url: str) -> Iterator[dict[str, Outcome]]:
    # A case that makes runs gets a database of its own (one active run per backfill);
    # the others share a few databases, one lane each.
    lanes: list[list[Case]] = [[c] for c in CASES if c.setup is not None or not c.db]
    shared = [c for c in CASES if c.setup is None and c.db]
    lanes += [shared[i::4] for i in range(4)]
    cleanup: list[tuple[str | None, str]] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(_lane, lane, pg_admin_url, templates["expanded"], redis_url, cleanup)
                   for lane in lanes if lane]
        results = {k: v for f in futures for k, v in f.result().items()}
    yield results
    client = redis_lib.Redis.from_url(redis_url)
    for db_name, namespace in cleanup:
        if db_name:
            servers.drop_database(pg_admin_url, db_name)
        if namespace:
            keys = list(client.scan_iter(f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
    client.close()


_CLICK_PREAMBLE = ("Usage: ", "Try ")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(outcomes: dict[str, Outcome], case: Case) -> None:
    out = outcomes[case.id]
    proc = out.proc
    shown = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == case.code, shown
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, shown
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"(?i)error: ", line)]
    assert len(errors) == 1, f"expected exactly one error line\n{shown}"
    others = [line for line in lines if line not in errors]
    assert all(line.startswith(_CLICK_PREAMBLE) for line in others), f"stray stderr output\n{shown}"
    # the error is the last thing said, and it is one sentence (no stray line continuation)
    assert lines[-1] == errors[0], shown
    message = case.message.replace("{run}", out.run_id or "")
    assert re.search(message, errors[0]), f"{message!r} not in the error line\n{shown}"
    assert proc.stdout.strip() == "", f"nothing belongs on stdout when the command is refused\n{shown}"
    assert SECRET not in proc.stderr + proc.stdout, "a password was printed"
    # nothing written: the tool's tables and the namespace's Redis keys are as they were
    assert out.db_after == out.db_before, "the database changed"
    assert out.redis_after == out.redis_before, "Redis changed"
