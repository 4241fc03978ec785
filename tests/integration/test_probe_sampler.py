"""The foreground sampler against real PostgreSQL and Redis: samples are tagged busy while
a batch (a session named like one) is in a transaction and idle otherwise, the published
reading has both tails, one sampler per table samples for every worker (a lease; another
takes over when the holder stops), and a probe that cannot run makes the reading unknown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from backfills.foreground import ForegroundMonitor, LatencyProbe, foreground_key
from backfills.latency import guard_ratio
from backfills.probe_sampler import ProbeSampler
from tests.support.checks import wait_until
from tests.support.engine_helpers import execute


@pytest.fixture
def samplers(probe: LatencyProbe, redis_client: Any, namespace: str) -> Iterator[Callable[[], ProbeSampler]]:
    """Samplers of the test table, stopped at the end."""
    made: list[ProbeSampler] = []

    def make() -> ProbeSampler:
        made.append(ProbeSampler(probe, redis_client, foreground_key(namespace, "sampled")))
        return made[-1]
    yield make
    for sampler in made:
        sampler.stop()


@pytest.fixture
def probe(engine: sa.Engine) -> LatencyProbe:
    execute(engine, "CREATE TABLE sampled (id int PRIMARY KEY, v text)",
            "INSERT INTO sampled SELECT g, 'x' FROM generate_series(1, 1000) g")
    return LatencyProbe(engine, "sampled", ("id",))


def _batch_session(url: str, hold: float, gap: float, stop: threading.Event) -> None:
    """A session that looks like a batch: named like one, in a transaction `hold` seconds
    out of every `hold + gap`."""
    with psycopg.connect(url) as conn:
        while not stop.is_set():
            conn.execute("SELECT set_config('application_name', 'backfill:sampled', true)")
            stop.wait(hold)
            conn.commit()
            stop.wait(gap)


def test_samples_are_busy_while_a_batch_is_in_a_transaction(
        probe: LatencyProbe, db_url: str, redis_client: Any, namespace: str, samplers: Callable[[], ProbeSampler]) -> None:
    assert not probe.sample().busy
    stop = threading.Event()
    batch = threading.Thread(target=_batch_session, args=(db_url, 0.5, 0.5, stop))
    batch.start()
    sampler = samplers()
    try:
        sampler.ensure()
        monitor = ForegroundMonitor(probe, redis_client, namespace, sampler.ensure)
        wait_until(lambda: (r := monitor.reading()) is not None and r.busy is not None and r.idle is not None,
                   20, "a reading with busy and idle tails")
        reading = monitor.reading()
        assert reading is not None and not reading.failing
        assert reading.recent is not None, "the published reading has the tail of all recent samples"
        busy = [s for s in sampler.samples if s.busy]
        assert 0.2 < len(busy) / len(sampler.samples) < 0.8, [s.busy for s in sampler.samples]
        # nothing here makes a batch slower for the application than the moments between
        assert guard_ratio(reading, None) < 5
    finally:
        stop.set()
        batch.join()


def test_one_sampler_samples_per_table_and_another_takes_over_when_it_stops(
        samplers: Callable[[], ProbeSampler]) -> None:
    first, second = samplers(), samplers()
    first.ensure()
    wait_until(lambda: len(first.samples) >= 5, 20, "the first sampler to sample")
    second.ensure()
    time.sleep(1.0)
    assert len(second.samples) == 0, "two samplers sampled the same table"
    first.stop()
    second.ensure()
    wait_until(lambda: len(second.samples) >= 5, 20, "the second sampler to take over")


def test_a_dead_holders_lease_runs_out_and_another_sampler_takes_over(
        samplers: Callable[[], ProbeSampler], redis_client: Any, namespace: str) -> None:
    redis_client.set(f"{foreground_key(namespace, 'sampled')}:sampler", "a-worker-that-died", px=1500)
    sampler = samplers()
    sampler.ensure()
    time.sleep(0.5)
    assert len(sampler.samples) == 0
    wait_until(lambda: len(sampler.samples) >= 5, 20, "the sampler to take the lease over")


def test_a_probe_that_cannot_run_makes_the_reading_unknown(
        probe: LatencyProbe, db_url: str, redis_client: Any, namespace: str,
        samplers: Callable[[], ProbeSampler]) -> None:
    sampler = samplers()
    monitor = ForegroundMonitor(probe, redis_client, namespace, sampler.ensure)
    wait_until(lambda: monitor.reading() is not None, 20, "a first reading")
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE backfill.probe IN ACCESS EXCLUSIVE MODE")  # every commit probe times out
        wait_until(lambda: (r := monitor.reading()) is None or r.failing, 20, "the reading to be unknown")
        reading = monitor.reading()
        assert reading is None or guard_ratio(reading, None) is None
        blocker.rollback()
    wait_until(lambda: (r := monitor.reading()) is not None and not r.failing, 20, "the reading to come back")


def test_the_guard_keeps_its_level_and_pace_across_slices(redis_client: Any, namespace: str) -> None:
    """A slice is short and the load is not: the next slice's guard starts where the last one
    stopped (level, calm count, pace, last ratios), through Redis."""
    import uuid
    from types import SimpleNamespace

    from backfills.control import RunControl
    from backfills.guard import START, GuardState
    from backfills.guard_hook import ForegroundGuardHook
    from backfills.signals import Action

    control = RunControl(redis_client, namespace, str(uuid.uuid4()))
    ctx: Any = SimpleNamespace(part=1)

    def hook() -> ForegroundGuardHook:
        return ForegroundGuardHook(lambda c: None, control, lambda: True,  # type: ignore[arg-type,return-value]
                                   lambda: 0.0)

    first = hook()
    first._load(ctx)
    assert first.state == START
    first.state, first.ratios = GuardState(Action.SLOW, calm=1, nice=8.0), [1.7, 1.6, 1.3]
    first.on_slice_end(ctx, None)
    second = hook()
    second._load(ctx)
    assert (second.state, second.ratios) == (GuardState(Action.SLOW, calm=1, nice=8.0), [1.7, 1.6, 1.3])
    other_part = hook()
    other_part._load(SimpleNamespace(part=0))
    assert other_part.state == START


def test_held_at_the_slowest_pace_the_guard_takes_the_latency_as_the_new_baseline(
        redis_client: Any, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database got slower on its own (1.5x the baseline between batches, the run at its
    slowest pace): after `REBASELINE_AFTER` seconds held back the guard re-measures the
    baseline from those readings, says so in the run's events, and eases off."""
    import uuid
    from types import SimpleNamespace

    from backfills import guard_hook
    from backfills.control import RunControl
    from backfills.foreground import reading_to_json
    from backfills.guard import CALM_READINGS, NICE_MAX, START
    from backfills.latency import Latency, Reading
    from backfills.signals import Action

    monkeypatch.setattr(guard_hook, "REBASELINE_AFTER", 0.5)
    control = RunControl(redis_client, namespace, str(uuid.uuid4()))
    monitor = ForegroundMonitor(SimpleNamespace(table="held"), redis_client, namespace,  # type: ignore[arg-type]
                                lambda: None)
    monitor.set_baseline(Latency(1.0, 1.0, time.time()))
    hook = guard_hook.ForegroundGuardHook(lambda c: monitor, control, lambda: True, lambda: 0.0)
    ctx: Any = SimpleNamespace(part=0, options=SimpleNamespace(max_latency_ratio=1.5), last_batch_seconds=0.01,
                               throttled=None, batch_factor=1.0, nap=lambda s: None)

    def publish() -> None:
        now = time.time()
        slower = Latency(2.0, 2.0, now)   # (2 + 1) / (1 + 1) = 1.5: at the ratio
        redis_client.set(f"{monitor.key}:reading", reading_to_json(Reading(now, None, slower, recent=slower)))

    levels = []
    deadline = time.time() + 0.5 + (CALM_READINGS + 2) * 0.06 + 5
    while time.time() < deadline and (not levels or levels[-1] != (Action.SLOW, NICE_MAX / 2)):
        publish()
        assert hook.before_batch(ctx) is None
        levels.append((hook.state.level, hook.state.nice))
        time.sleep(0.06)
    assert levels[0] == (START.level, START.nice)
    assert levels[-1] == (Action.SLOW, NICE_MAX / 2), levels[-5:]
    assert (monitor.baseline().commit_ms, monitor.baseline().read_ms) == (2.0, 2.0)  # type: ignore[union-attr]
    assert any("baseline re-measured" in e for e in control.events()), control.events()
