"""Integration tests for backfills.runs.RunStore against a real PostgreSQL database."""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from backfills.runs import ActiveRunExists, Run, RunNotFound, RunOptions, RunStore
from backfills.states import ACTIVE, STATES, TERMINAL, TRANSITIONS, InvalidTransition

TENANT = "6f1c2a3e-0000-4000-8000-00000000abcd"
# How to bring a fresh (queued) run into each state through allowed transitions.
PATH_TO: dict[str, list[str]] = {
    "queued": [],
    "running": ["running"],
    "paused": ["paused"],
    "succeeded": ["running", "succeeded"],
    "completed_with_errors": ["running", "completed_with_errors"],
    "failed": ["failed"],
    "cancelled": ["cancelled"],
}
ALLOWED = sorted((src, dst) for src in STATES for dst in TRANSITIONS[src])
DISALLOWED = sorted((src, dst) for src, dst in itertools.product(STATES, STATES)
                    if src != dst and dst not in TRANSITIONS[src])
MALFORMED_IDS = ["", "abc", "123", "not-a-uuid'; DROP TABLE backfill.runs; --", "6f1c2a3e-0000-4000-8000"]


@pytest.fixture
def store(engine: sa.Engine) -> RunStore:
    return RunStore(engine)


def _in_state(store: RunStore, state: str, backfill: str = "aois_status") -> Run:
    run = store.create(backfill, RunOptions())
    for step in PATH_TO[state]:
        run = store.transition(run.id, step)
    assert run.state == state
    return run


def _scalar(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def _add_row_error(engine: sa.Engine, run_id: str, key: list[str], error: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO backfill.row_errors (run_id, key, error) "
                             "VALUES (CAST(:r AS uuid), CAST(:k AS jsonb), :e)"),
                     {"r": run_id, "k": json.dumps(key), "e": error})


# -- create / get -------------------------------------------------------------------------
def test_create_get_round_trip(store: RunStore, engine: sa.Engine) -> None:
    options = RunOptions(batch_size=250, sleep=0, max_rows_per_second=500.0, target_batch_seconds=0.5,
                         lock_timeout=1.5, max_row_errors=3, partitions=2)
    parts = [(None, ["500", "b"]), (["500", "b"], None)]
    created = store.create("aois_status", options, tenant=TENANT.upper(), rows_estimate=1000, parts=parts)
    assert uuid.UUID(created.id)
    got = store.get(created.id)
    assert got == created
    assert (got.backfill, got.state, got.options, got.tenant) == ("aois_status", "queued", options, TENANT)
    assert (got.rows_estimate, got.parent_run_id, got.last_error) == (1000, None, None)
    assert got.started_at is None and got.finished_at is None
    assert got.created_at.tzinfo is not None and got.updated_at >= got.created_at
    assert [(p.part, p.lower_key, p.upper_key, p.cursor, p.done) for p in got.parts] == [
        (0, None, ["500", "b"], None, False), (1, ["500", "b"], None, ["500", "b"], False)]
    assert (got.rows_processed, got.batches, got.row_errors, got.rows_remaining_estimate) == (0, 0, 0, 1000)
    stored = _scalar(engine, "SELECT options FROM backfill.runs WHERE id = CAST(:id AS uuid)", id=got.id)
    assert stored == options.to_json()


def test_get_accepts_any_uuid_spelling(store: RunStore) -> None:
    run = store.create("aois_status", RunOptions())
    assert store.get(run.id.upper()).id == run.id
    assert store.get(uuid.UUID(run.id).hex).id == run.id


def test_create_defaults_to_one_unbounded_part(store: RunStore) -> None:
    run = store.create("jobs_tenant_id", RunOptions())
    assert [(p.part, p.lower_key, p.upper_key, p.cursor) for p in run.parts] == [(0, None, None, None)]
    assert run.tenant is None and run.rows_remaining_estimate is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tenant": "acme"}, "--tenant must be a UUID"),
    ({"rows_estimate": -1}, "rows_estimate must be"),
    ({"parts": []}, "at least one part"),
    ({"parts": [("5", None)]}, "lower key must be a list of strings"),
    ({"parts": [(None, [5])]}, "upper key must be a list of strings"),
])
def test_create_rejects_bad_arguments(store: RunStore, engine: sa.Engine, kwargs: dict[str, object],
                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.create("aois_status", RunOptions(), **kwargs)  # type: ignore[arg-type]
    assert _scalar(engine, "SELECT count(*) FROM backfill.runs") == 0


def test_create_rejects_invalid_options(store: RunStore, engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="--batch-size"):
        store.create("aois_status", RunOptions(batch_size=0))
    assert _scalar(engine, "SELECT count(*) FROM backfill.runs") == 0


def test_parent_run(store: RunStore, engine: sa.Engine) -> None:
    parent = _in_state(store, "completed_with_errors")
    child = store.create("aois_status", RunOptions(), parent_run_id=parent.id)
    assert store.get(child.id).parent_run_id == parent.id
    with pytest.raises(RunNotFound):
        store.create("jobs_tenant_id", RunOptions(), parent_run_id=str(uuid.uuid4()))
    assert _scalar(engine, "SELECT count(*) FROM backfill.runs WHERE backfill = 'jobs_tenant_id'") == 0


# -- one active run per backfill ----------------------------------------------------------
@pytest.mark.parametrize("state", sorted(ACTIVE))
def test_second_active_run_is_refused(store: RunStore, engine: sa.Engine, state: str) -> None:
    first = _in_state(store, state)
    with pytest.raises(ActiveRunExists) as info:
        store.create("aois_status", RunOptions())
    assert info.value.run_id == first.id
    assert str(info.value) == (f"backfill aois_status already has an active run {first.id} ({state}); "
                               f"wait for it, or cancel it with `backfill cancel {first.id}`")
    assert _scalar(engine, "SELECT count(*) FROM backfill.runs") == 1
    assert _scalar(engine, "SELECT count(*) FROM backfill.progress") == 1


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_new_run_allowed_after_the_active_one_ends(store: RunStore, state: str) -> None:
    first = _in_state(store, state)
    second = store.create("aois_status", RunOptions())
    assert second.id != first.id and second.state == "queued"


def test_other_backfills_are_independent(store: RunStore) -> None:
    first = store.create("aois_status", RunOptions())
    other = store.create("jobs_tenant_id", RunOptions())
    assert {r.id for r in store.active()} == {first.id, other.id}


def test_concurrent_creators_only_one_wins(store: RunStore, engine: sa.Engine) -> None:
    barrier = threading.Barrier(6)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            return store.create("aois_status", RunOptions()).id
        except ActiveRunExists as exc:
            return "refused:" + exc.run_id

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(attempt, range(6)))
    winners = [r for r in results if not r.startswith("refused:")]
    assert len(winners) == 1
    assert all(r == "refused:" + winners[0] for r in results if r not in winners)
    assert _scalar(engine, "SELECT count(*) FROM backfill.runs") == 1


# -- not found ----------------------------------------------------------------------------
@pytest.mark.parametrize("run_id", [str(uuid.uuid4()), *MALFORMED_IDS])
def test_unknown_and_malformed_ids(store: RunStore, run_id: str) -> None:
    calls = [
        lambda: store.get(run_id), lambda: store.transition(run_id, "running"),
        lambda: store.update_options(run_id, RunOptions()), lambda: store.mark_part_done(run_id, 0),
        lambda: store.set_cursor(run_id, 0, ["1"]), lambda: store.row_errors(run_id),
        lambda: store.row_error_count(run_id), lambda: store.touch(run_id),
    ]
    for call in calls:
        with pytest.raises(RunNotFound) as info:
            call()
        assert str(info.value) == f"no run with id {run_id}"


# -- transitions --------------------------------------------------------------------------
@pytest.mark.parametrize(("src", "dst"), ALLOWED, ids=[f"{s}->{d}" for s, d in ALLOWED])
def test_allowed_transitions(store: RunStore, src: str, dst: str) -> None:
    before = _in_state(store, src)
    after = store.transition(before.id, dst)
    assert after.state == dst and store.get(before.id) == after
    assert after.updated_at >= before.updated_at
    if dst == "running":
        assert after.started_at is not None and after.started_at >= after.created_at
    else:
        assert after.started_at == before.started_at
    if dst in TERMINAL:
        assert after.finished_at is not None and after.finished_at >= after.created_at
    else:
        assert after.finished_at is None


def test_started_at_is_kept_when_running_again(store: RunStore) -> None:
    run = _in_state(store, "running")
    started = run.started_at
    for step in ("paused", "queued", "running"):
        run = store.transition(run.id, step)
    assert run.started_at == started and run.finished_at is None


@pytest.mark.parametrize(("src", "dst"), DISALLOWED, ids=[f"{s}->{d}" for s, d in DISALLOWED])
def test_disallowed_transitions_change_nothing(store: RunStore, src: str, dst: str) -> None:
    before = _in_state(store, src)
    with pytest.raises(InvalidTransition) as info:
        store.transition(before.id, dst, error="should not be stored")
    assert (info.value.run_id, info.value.current, info.value.new) == (before.id, src, dst)
    assert str(info.value).startswith(f"run {before.id} is {src}; it cannot become {dst}")
    assert store.get(before.id) == before


@pytest.mark.parametrize("state", STATES)
def test_same_state_is_idempotent(store: RunStore, state: str) -> None:
    before = _in_state(store, state)
    assert store.transition(before.id, state, error="ignored") == before
    assert store.get(before.id) == before


def test_expected_guard(store: RunStore) -> None:
    run = store.create("aois_status", RunOptions())
    with pytest.raises(InvalidTransition, match=f"run {run.id} is queued, not paused or running"):
        store.transition(run.id, "cancelled", expected=["running", "paused"])
    assert store.get(run.id) == run
    started = store.transition(run.id, "running", expected=["queued"])
    assert started.state == "running"
    with pytest.raises(InvalidTransition):  # a second worker cannot start it again
        store.transition(run.id, "running", expected=("queued",))
    assert store.get(run.id) == started


def test_unknown_state_names_raise_value_error(store: RunStore) -> None:
    run = store.create("aois_status", RunOptions())
    with pytest.raises(ValueError, match="unknown run state"):
        store.transition(run.id, "done")
    with pytest.raises(ValueError, match="unknown run state"):
        store.transition(run.id, "running", expected=["Queued"])
    assert store.get(run.id) == run


def test_error_is_recorded(store: RunStore) -> None:
    run = _in_state(store, "running")
    failed = store.transition(run.id, "failed", error="lock timeout 12 times in a row")
    assert failed.last_error == "lock timeout 12 times in a row"
    assert failed.to_status_json()["last_error"] == failed.last_error


# -- options, parts, heartbeat ------------------------------------------------------------
def test_update_options(store: RunStore) -> None:
    run = _in_state(store, "running")
    changed = store.update_options(run.id, run.options.replace(batch_size=99, sleep=1))
    assert store.get(run.id).options == RunOptions(batch_size=99, sleep=1.0)
    assert changed.state == "running"
    with pytest.raises(ValueError, match="--sleep"):
        store.update_options(run.id, RunOptions(sleep=-1))
    assert store.get(run.id).options.sleep == 1.0


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_update_options_refused_on_finished_run(store: RunStore, state: str) -> None:
    run = _in_state(store, state)
    with pytest.raises(InvalidTransition, match="options of a finished run cannot be changed"):
        store.update_options(run.id, RunOptions(batch_size=5))
    assert store.get(run.id).options == RunOptions()


def test_parts_sums_and_done(store: RunStore, engine: sa.Engine) -> None:
    run = store.create("aois_status", RunOptions(partitions=3), rows_estimate=100,
                       parts=[(None, ["10"]), (["10"], ["20"]), (["20"], None)])
    with engine.begin() as conn:
        for part, (processed, scanned, batches, errors) in enumerate([(10, 12, 2, 1), (7, 7, 1, 0), (0, 3, 1, 2)]):
            conn.execute(sa.text("UPDATE backfill.progress SET rows_processed = :p, rows_scanned = :s, "
                                 "batches = :b, row_errors = :e WHERE run_id = CAST(:r AS uuid) AND part = :n"),
                         {"p": processed, "s": scanned, "b": batches, "e": errors, "r": run.id, "n": part})
    run = store.get(run.id)
    assert (run.rows_processed, run.rows_scanned, run.batches, run.row_errors) == (17, 22, 4, 3)
    assert run.rows_remaining_estimate == 80
    status = run.to_status_json()
    assert (status["rows_processed"], status["batches"], status["row_errors"]) == (17, 4, 3)
    json.dumps(status)
    for part in (0, 2):
        store.mark_part_done(run.id, part)
    assert [p.done for p in store.get(run.id).parts] == [True, False, True]
    assert store.get(run.id).done is False
    store.mark_part_done(run.id, 1)
    assert store.get(run.id).done is True
    with pytest.raises(ValueError, match="has no part 3"):
        store.mark_part_done(run.id, 3)


def test_set_cursor(store: RunStore) -> None:
    run = store.create("aois_status", RunOptions())
    store.set_cursor(run.id, 0, ["42", "x"])
    assert store.get(run.id).parts[0].cursor == ["42", "x"]
    store.set_cursor(run.id, 0, None)
    assert store.get(run.id).parts[0].cursor is None
    with pytest.raises(ValueError, match="has no part 1"):
        store.set_cursor(run.id, 1, ["1"])


def test_touch_moves_updated_at(store: RunStore) -> None:
    run = store.create("aois_status", RunOptions())
    time.sleep(0.01)
    store.touch(run.id)
    assert store.get(run.id).updated_at > run.updated_at


# -- row errors ---------------------------------------------------------------------------
def test_row_errors(store: RunStore, engine: sa.Engine) -> None:
    run = _in_state(store, "completed_with_errors")
    other = store.create("aois_status", RunOptions())
    for key, error in [(["c", "2"], "bad geometry"), (["a", "9"], "area overflow"), (["b", "1"], "no tenant")]:
        _add_row_error(engine, run.id, key, error)
    _add_row_error(engine, other.id, ["a", "0"], "someone else's")
    errors = store.row_errors(run.id)
    assert [(e.key, e.error) for e in errors] == [
        (["a", "9"], "area overflow"), (["b", "1"], "no tenant"), (["c", "2"], "bad geometry")]
    assert all(e.created_at.tzinfo is not None for e in errors)
    assert [e.key for e in store.row_errors(run.id, limit=2)] == [["a", "9"], ["b", "1"]]
    assert store.row_errors(run.id, limit=0) == []
    assert store.row_error_count(run.id) == 3
    assert store.row_error_count(other.id) == 1
    assert store.row_errors(store.create("jobs_tenant_id", RunOptions()).id) == []
    with pytest.raises(ValueError, match="limit"):
        store.row_errors(run.id, limit=-1)


# -- listing ------------------------------------------------------------------------------
def test_list_newest_first_and_active(store: RunStore) -> None:
    done = _in_state(store, "succeeded", backfill="aois_status")
    running = _in_state(store, "running", backfill="jobs_tenant_id")
    queued = store.create("aois_status", RunOptions())
    assert [r.id for r in store.list()] == [queued.id, running.id, done.id]
    assert [r.id for r in store.list(limit=2)] == [queued.id, running.id]
    assert store.list(limit=0) == []
    assert [r.id for r in store.active()] == [running.id, queued.id]
    assert all(len(r.parts) == 1 for r in store.list())
