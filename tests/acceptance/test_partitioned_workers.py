"""Partitions run by whichever real workers are free; a killed worker stalls nothing."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from core.settings import Settings
from tests.support.workers import run_cli
from worker import sample_data


def parts(settings: Settings, run_id: str) -> list[dict]:
    return json.loads(run_cli(settings, "status", run_id, "--json").stdout)["parts"]


def test_a_worker_killed_while_holding_a_partition_does_not_stall_the_others(
        engine: sa.Engine, settings: Settings, workers) -> None:
    sample_data.load(engine, sample_data.SampleSpec(aois=40_000, jobs=100, bad_rows=False))
    first = workers(concurrency=2)
    second = workers(concurrency=1)             # prefetch 1: each free slot takes one part, none more
    enqueued = run_cli(settings, "enqueue", "aois_status", "--partitions", "3", "--batch-size", "500",
                       "--sleep", "0.25",
                       "--max-latency-ratio", "0")       # >= 27 batches x 0.25 s: no part can end before the kill
    assert enqueued.returncode == 0, enqueued.stderr
    run_id = enqueued.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while sum(p["rows_processed"] > 0 for p in parts(settings, run_id)) < 3:
        assert time.monotonic() < deadline, "three partitions never started"
        time.sleep(0.2)
    first.kill_group()                          # dies holding two partitions' leases
    killed_at = {p["part"]: p["rows_processed"] for p in parts(settings, run_id)}
    assert not any(p["done"] for p in parts(settings, run_id)), "a part ended before the kill: make them longer"
    moved = False
    deadline = time.monotonic() + 2.5           # less than the lease + stale time of a dead part
    while not moved and time.monotonic() < deadline:
        time.sleep(0.25)
        moved = any(p["rows_processed"] > killed_at[p["part"]] for p in parts(settings, run_id))
    assert moved, "the surviving worker should keep going on its own part meanwhile"
    waited = run_cli(settings, "wait", run_id, "--timeout", "120", timeout=150)
    assert waited.returncode == 0, waited.stdout + waited.stderr + second.log()[-2000:]
    final = json.loads(run_cli(settings, "status", run_id, "--json").stdout)
    assert final["rows_processed"] == 40_000
    assert all(p["done"] for p in final["parts"]) and len(final["parts"]) == 3
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM aois WHERE status IS NULL")).scalar_one() == 0
