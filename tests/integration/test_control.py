"""Integration tests for backfills.control against a real Redis."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest
import redis as redis_lib

from backfills.control import (
    RUN_TTL_SECONDS,
    Checkpoint,
    KillSwitch,
    Lease,
    RunControl,
    TokenBucket,
    reconcile_lock,
)

RACE_ROUNDS = 20


def _checkpoint(**changes: Any) -> Checkpoint:
    values: dict[str, Any] = dict(cursor=["42", "b"], rows_processed=1000, batches=3, row_errors=1,
                                  at=time.time(), batch_size=500, last_batch_seconds=0.25,
                                  throttled="replication_lag")
    values.update(changes)
    return Checkpoint(**values)


# --- Lease -------------------------------------------------------------------------------


def test_second_lease_cannot_acquire_while_held(redis_client: redis_lib.Redis, namespace: str) -> None:
    key = f"{namespace}:lease"
    first, second = Lease(redis_client, key, 5), Lease(redis_client, key, 5)
    assert first.token != second.token
    assert first.acquire() is True
    assert second.acquire() is False
    assert redis_client.get(key) == first.token.encode()
    assert 4.0 < (second.holder_ttl() or 0) <= 5.0


def test_non_holder_cannot_renew_or_release(redis_client: redis_lib.Redis, namespace: str) -> None:
    key = f"{namespace}:lease"
    holder, other = Lease(redis_client, key, 5), Lease(redis_client, key, 60)
    assert holder.acquire()
    assert other.renew() is False
    assert other.release() is False
    assert redis_client.get(key) == holder.token.encode()
    assert (holder.holder_ttl() or 0) <= 5.0, "a non-holder's renew must not extend the lease"
    assert holder.renew() is True
    assert holder.release() is True
    assert holder.holder_ttl() is None


def test_renew_extends_the_lease(redis_client: redis_lib.Redis, namespace: str) -> None:
    lease = Lease(redis_client, f"{namespace}:lease", 0.4)
    assert lease.acquire()
    for _ in range(3):
        time.sleep(0.25)
        assert lease.renew() is True
    assert lease.holder_ttl() is not None


def test_expired_lease_can_be_taken_and_old_holder_loses_it(redis_client: redis_lib.Redis, namespace: str) -> None:
    key = f"{namespace}:lease"
    old, new = Lease(redis_client, key, 0.3), Lease(redis_client, key, 5)
    assert old.acquire()
    time.sleep(0.5)
    assert old.holder_ttl() is None
    assert new.acquire() is True
    assert old.renew() is False
    assert old.release() is False
    assert redis_client.get(key) == new.token.encode()


def test_release_then_acquire(redis_client: redis_lib.Redis, namespace: str) -> None:
    key = f"{namespace}:lease"
    first, second = Lease(redis_client, key, 5), Lease(redis_client, key, 5)
    assert first.acquire()
    assert first.release() is True
    assert first.release() is False
    assert second.acquire() is True


def test_lease_rejects_bad_ttl(redis_client: redis_lib.Redis, namespace: str) -> None:
    with pytest.raises(ValueError):
        Lease(redis_client, f"{namespace}:lease", 0)


def _race(redis_url: str, namespace: str, barrier: Any, results: Any) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    control = RunControl(client, namespace, "race")
    for round_no in range(RACE_ROUNDS):
        lease = control.lease(round_no, 30)
        barrier.wait(timeout=30)
        results.put((round_no, lease.acquire()))
    client.close()


def test_two_processes_race_for_a_lease(redis_url: str, redis_client: redis_lib.Redis, namespace: str) -> None:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(redis_url, namespace, barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in range(2 * RACE_ROUNDS)]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    wins = {round_no: 0 for round_no in range(RACE_ROUNDS)}
    for round_no, won in outcomes:
        wins[round_no] += int(won)
    assert wins == {round_no: 1 for round_no in range(RACE_ROUNDS)}


# --- RunControl ----------------------------------------------------------------------------


def test_request_round_trip(redis_client: redis_lib.Redis, namespace: str) -> None:
    control = RunControl(redis_client, namespace, "r1")
    assert control.requested() is None
    for command in ("pause", "run", "cancel"):
        control.request(command)
        assert control.requested() == command
        # seen from another client, as another machine would
        assert RunControl(redis_lib.Redis(connection_pool=redis_client.connection_pool), namespace, "r1").requested() == command
    assert redis_client.get(f"{namespace}:run:r1:control") == b"cancel"


def test_request_rejects_unknown_command(redis_client: redis_lib.Redis, namespace: str) -> None:
    control = RunControl(redis_client, namespace, "r1")
    control.request("pause")
    with pytest.raises(ValueError):
        control.request("resume")
    assert control.requested() == "pause"


def test_overrides_typed_back(redis_client: redis_lib.Redis, namespace: str) -> None:
    control = RunControl(redis_client, namespace, "r1")
    assert control.overrides() == {}
    control.set_overrides(batch_size=2500, sleep=0)
    control.set_overrides(max_rows_per_second=1000)
    got = control.overrides()
    assert got == {"batch_size": 2500, "sleep": 0.0, "max_rows_per_second": 1000.0}
    assert type(got["batch_size"]) is int
    assert type(got["sleep"]) is float and type(got["max_rows_per_second"]) is float
    assert redis_client.hget(f"{namespace}:run:r1:overrides", "batch_size") == b"2500"


@pytest.mark.parametrize("bad", [{"batch_sise": 5}, {"batch_size": 0}, {"batch_size": 1.5},
                                 {"sleep": -1}, {"max_rows_per_second": float("nan")}, {"sleep": True}])
def test_overrides_reject_bad_input(redis_client: redis_lib.Redis, namespace: str, bad: dict[str, Any]) -> None:
    control = RunControl(redis_client, namespace, "r1")
    control.set_overrides(batch_size=100)
    with pytest.raises(ValueError):
        control.set_overrides(**bad)
    assert control.overrides() == {"batch_size": 100}


def test_checkpoint_round_trip_two_parts(redis_client: redis_lib.Redis, namespace: str) -> None:
    control = RunControl(redis_client, namespace, "r1")
    assert control.checkpoints() == {}
    zero = _checkpoint()
    one = _checkpoint(cursor=None, throttled=None, rows_processed=7, batches=1, row_errors=0, batch_size=10)
    control.write_checkpoint(0, zero)
    control.write_checkpoint(1, one)
    assert control.checkpoints() == {0: zero, 1: one}
    newer = _checkpoint(cursor=["99", "z"], throttled=None, rows_processed=2000)
    control.write_checkpoint(0, newer)
    assert control.checkpoints() == {0: newer, 1: one}, "a None field must not keep its old value"


def test_checkpoint_refreshes_run_ttl(redis_client: redis_lib.Redis, namespace: str) -> None:
    control = RunControl(redis_client, namespace, "r1")
    control.request("pause")
    control.set_overrides(sleep=1)
    redis_client.expire(control.key("control"), 10)
    lease = control.lease(0, 30)
    assert lease.acquire()
    control.write_checkpoint(0, _checkpoint())
    for what in ("control", "overrides", "checkpoint:0"):
        assert RUN_TTL_SECONDS - 60 < redis_client.ttl(control.key(what)) <= RUN_TTL_SECONDS
    assert redis_client.ttl(control.key("lease:0")) <= 30, "leases keep their own expiry"


def test_heartbeat_age_grows(redis_client: redis_lib.Redis, namespace: str) -> None:
    control = RunControl(redis_client, namespace, "r1")
    assert control.heartbeat_age() is None
    control.write_checkpoint(0, _checkpoint(at=time.time() - 100))
    control.write_checkpoint(1, _checkpoint(at=time.time()))
    first = control.heartbeat_age()
    assert first is not None and 0 <= first < 1, "the newest checkpoint counts"
    time.sleep(0.3)
    second = control.heartbeat_age()
    assert second is not None and second >= first + 0.25


def test_clear_removes_only_this_run(redis_client: redis_lib.Redis, namespace: str) -> None:
    mine, other, longer = (RunControl(redis_client, namespace, run) for run in ("r1", "r2", "r10"))
    for control in (mine, other, longer):
        control.request("pause")
        control.set_overrides(batch_size=10)
        control.write_checkpoint(0, _checkpoint())
        control.write_checkpoint(3, _checkpoint())
        assert control.lease(0, 30).acquire()
        control.token_bucket(100).take(1)
    for i in range(1200):  # more keys than one SCAN batch
        redis_client.set(mine.key(f"extra:{i}"), 1)
    KillSwitch(redis_client, namespace).engage("test")
    other_keys = set(redis_client.scan_iter(f"{namespace}:run:r2:*"))
    longer_keys = set(redis_client.scan_iter(f"{namespace}:run:r10:*"))
    mine.clear()
    assert list(redis_client.scan_iter(f"{namespace}:run:r1:*")) == []
    assert mine.checkpoints() == {} and mine.requested() is None
    assert set(redis_client.scan_iter(f"{namespace}:run:r2:*")) == other_keys
    assert set(redis_client.scan_iter(f"{namespace}:run:r10:*")) == longer_keys
    assert len(other_keys) == 7
    assert KillSwitch(redis_client, namespace).reason() == "test"


def test_clear_treats_glob_characters_literally(redis_client: redis_lib.Redis, namespace: str) -> None:
    wild, plain = RunControl(redis_client, namespace, "r*"), RunControl(redis_client, namespace, "r1")
    wild.request("pause")
    plain.request("pause")
    wild.clear()
    assert wild.requested() is None
    assert plain.requested() == "pause"


def test_run_id_with_colon_is_refused(redis_client: redis_lib.Redis, namespace: str) -> None:
    with pytest.raises(ValueError):
        RunControl(redis_client, namespace, "a:b")


# --- KillSwitch ----------------------------------------------------------------------------


def test_kill_switch(redis_client: redis_lib.Redis, namespace: str) -> None:
    switch = KillSwitch(redis_client, namespace)
    assert switch.reason() is None
    switch.engage("incident 42")
    assert switch.reason() == "incident 42"
    assert KillSwitch(redis_client, namespace).reason() == "incident 42"
    assert redis_client.get(f"{namespace}:kill") == b"incident 42"
    assert KillSwitch(redis_client, namespace + "x").reason() is None
    switch.release()
    assert switch.reason() is None
    switch.release()
    with pytest.raises(ValueError):
        switch.engage("")


# --- TokenBucket ---------------------------------------------------------------------------


def test_token_bucket_waits_for_debt(redis_client: redis_lib.Redis, namespace: str) -> None:
    bucket = TokenBucket(redis_client, f"{namespace}:bucket", 1000)
    assert bucket.take(1000) == 0.0
    wait = bucket.take(1000)
    assert 0.8 <= wait <= 1.05
    third = bucket.take(500)
    assert 1.3 <= third <= 1.55, "reservations queue behind earlier debt"


def test_token_bucket_refills_over_time(redis_client: redis_lib.Redis, namespace: str) -> None:
    bucket = TokenBucket(redis_client, f"{namespace}:bucket", 1000)
    assert bucket.take(1000) == 0.0
    time.sleep(0.5)
    assert 0.35 <= bucket.take(900) <= 0.45


def test_token_bucket_large_batch_passes_with_longer_wait(redis_client: redis_lib.Redis, namespace: str) -> None:
    bucket = TokenBucket(redis_client, f"{namespace}:bucket", 1000)
    assert bucket.take(1000) == 0.0
    wait = bucket.take(3000)
    assert 2.8 <= wait <= 3.05


def test_token_bucket_capacity_is_one_second_or_the_request(redis_client: redis_lib.Redis, namespace: str) -> None:
    idle = TokenBucket(redis_client, f"{namespace}:idle", 1000)
    assert idle.take(1000) == 0.0
    time.sleep(1.3)
    assert idle.take(1000) == 0.0
    assert 0.25 <= idle.take(300) <= 0.31, "an idle bucket holds only one second of rate"
    big = TokenBucket(redis_client, f"{namespace}:big", 1000)
    assert big.take(1000) == 0.0
    time.sleep(1.3)
    assert big.take(1200) == 0.0, "capacity grows to a request larger than the rate"


def test_token_bucket_shared_between_clients(redis_url: str, redis_client: redis_lib.Redis, namespace: str) -> None:
    key = f"{namespace}:run:r1:bucket"
    other_client = redis_lib.Redis.from_url(redis_url)
    try:
        first = TokenBucket(redis_client, key, 1000)
        second = TokenBucket(other_client, key, 1000)
        assert first.take(1000) == 0.0
        assert 0.4 <= second.take(500) <= 0.55, "the first client's take drained the shared bucket"
        assert second.take(0) >= 0.4
    finally:
        other_client.close()


def test_token_bucket_rejects_bad_rate(redis_client: redis_lib.Redis, namespace: str) -> None:
    with pytest.raises(ValueError):
        TokenBucket(redis_client, f"{namespace}:bucket", 0)


# --- reconcile_lock ------------------------------------------------------------------------


def test_reconcile_lock_one_per_ttl(redis_client: redis_lib.Redis, namespace: str) -> None:
    other = redis_lib.Redis(connection_pool=redis_client.connection_pool)
    assert reconcile_lock(redis_client, namespace, 0.3) is True
    assert reconcile_lock(other, namespace, 0.3) is False
    assert reconcile_lock(redis_client, namespace, 0.3) is False
    time.sleep(0.45)
    assert reconcile_lock(other, namespace, 0.3) is True
