"""The foreground guard as a hook: before each batch, the shared latency reading (taken all
the time by the table's sampler, `backfills.probe_sampler`) decides (see `backfills.guard`)
whether the run works, slows down or waits. Its ratio (`backfills.latency.guard_ratio`) is
the larger of the run's effect (all recent latency over latency between batches, in the
same minute) and the database's stress (latency between batches over the idle baseline).

The baseline is measured while the run is idle: before its first batch (the hook takes
it before letting that batch run), again when it is older than `BASELINE_MAX_AGE`, and
after `REBASELINE_AFTER` seconds of one hold (a pause, or the slowest pace): by then the
run has done next to nothing that long, so the latency is the application's own, and the
run goes on at the new level. That is how the guard never stalls a run for good on load
the run does not cause.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict
from collections.abc import Callable

from backfills.control import RunControl
from backfills.foreground import ForegroundMonitor, publish_run_ratio
from backfills.guard import NICE_MAX, REASON, START, UNKNOWN_REASON, WINDOW, GuardState, step
from backfills.latency import Latency, Reading, guard_ratio, latest
from backfills.hooks import Hook, SliceContext, Stop
from backfills.reasons import GUARD_REASONS
from backfills.signals import Action, Decision
from backfills.throttle import throttled_wait

__all__ = ["ForegroundGuardHook", "BASELINE_SAMPLES", "BASELINE_MAX_AGE", "REBASELINE_AFTER"]

BASELINE_SAMPLES = 10
BASELINE_MAX_AGE = 600.0
REBASELINE_AFTER = 30.0


def _median_latency(readings: list[Latency]) -> Latency:
    commits = [r.commit_ms for r in readings if r.commit_ms is not None]
    reads = [r.read_ms for r in readings if r.read_ms is not None]
    return Latency(float(statistics.median(commits)) if commits else None,
                   float(statistics.median(reads)) if reads else None, time.time())


class ForegroundGuardHook(Hook):
    """`--max-latency-ratio`: slow down, then pause, while the application would feel the run."""

    def __init__(self, monitor_for: Callable[[SliceContext], ForegroundMonitor],
                 control: RunControl, renew: Callable[[], bool], deadline: Callable[[], float]) -> None:
        self.monitor_for = monitor_for
        self.control = control
        self.renew = renew
        self.deadline = deadline
        self.state = START
        self.ratios: list[float | None] = []
        self._monitor: ForegroundMonitor | None = None
        self._paused_since: float | None = None
        self._idle: list[Latency] = []
        self._loaded = False
        self._last_at: float | None = None
        self._decision: Decision | None = None
        self._unknown_since: float | None = None

    def _memory_key(self, ctx: SliceContext) -> str:
        return self.control.key(f"guard:{ctx.part}")

    def _load(self, ctx: SliceContext) -> None:
        """The guard's memory of the previous slice of this part (a slice is short; the load is not)."""
        self._loaded = True
        raw = self.control.client.get(self._memory_key(ctx))
        if not raw:
            return
        data = json.loads(raw)
        self.state = GuardState(Action(data["level"]), int(data["calm"]), float(data.get("nice", 0.0)))
        self.ratios = list(data["ratios"])
        self._paused_since = data["paused_since"]
        self._idle = [Latency(**r) for r in data["idle"]]
        self._unknown_since = data.get("unknown_since")

    def on_slice_end(self, ctx: SliceContext, stop: Stop | None) -> None:
        if not self._loaded:
            return
        self.control.client.set(self._memory_key(ctx), json.dumps({
            "level": int(self.state.level), "calm": self.state.calm, "nice": self.state.nice, "ratios": self.ratios,
            "paused_since": self._paused_since, "idle": [asdict(r) for r in self._idle[-60:]],
            "unknown_since": self._unknown_since,
        }), ex=3600)

    def before_batch(self, ctx: SliceContext) -> Stop | None:
        max_ratio = ctx.options.max_latency_ratio
        if not max_ratio:
            return None
        if not self._loaded:
            self._load(ctx)
        if self._monitor is None:
            self._monitor = self.monitor_for(ctx)
        monitor = self._monitor
        while True:
            baseline = self._baseline(monitor)
            reading = monitor.reading()
            decision = self._observe(reading, baseline, max_ratio, ctx.last_batch_seconds)
            self._note_unknown(decision)
            if self._held(decision):
                self._while_held(monitor, reading)
            else:
                self._paused_since, self._idle = None, []
            if decision.action is not Action.PAUSE:
                break
            stop = throttled_wait(ctx, self.control, self.renew, self.deadline, decision.reason or REASON,
                                  decision.sleep_seconds)
            if stop is not None:
                return stop
        if decision.action is Action.SLOW:
            ctx.throttled = REASON
            ctx.batch_factor *= decision.batch_factor
            reason = ctx.nap(decision.sleep_seconds)
            return Stop(reason) if reason else None
        if ctx.throttled in GUARD_REASONS:
            ctx.throttled = None
        return None

    def _note_unknown(self, decision: Decision) -> None:
        """Remember when the probe stopped answering (a database outage, a failover), and say
        in the run's events how long the run waited once it answers again."""
        if decision.reason == UNKNOWN_REASON:
            if self._unknown_since is None:
                self._unknown_since = time.time()
        elif self._unknown_since is not None:
            waited = time.time() - self._unknown_since
            self._unknown_since = None
            self.control.add_event(f"recovered after {waited:.1f}s: the foreground probe answers again")

    def _observe(self, reading: Reading | None, baseline: Latency | None, max_ratio: float,
                 batch_seconds: float) -> Decision:
        """Fold a reading into the state; a reading already seen (they are shared and last a
        second, batches may be faster) counts once, so the window and the calm count are
        in readings, not in batches. No reading is an unknown one."""
        at = reading.at if reading is not None else None
        if at is not None and at == self._last_at and self._decision is not None:
            return self._decision
        self._last_at = at
        current = guard_ratio(reading, baseline) if reading is not None else None
        publish_run_ratio(self.control, current)
        self.ratios = [*self.ratios, current][-WINDOW:]
        self.state, self._decision = step(self.state, self.ratios, max_ratio, batch_seconds)
        return self._decision

    def _baseline(self, monitor: ForegroundMonitor) -> Latency | None:
        """The idle baseline; measured now (the run is between batches) when missing or old."""
        baseline = monitor.baseline()
        if baseline is None or not baseline.known or time.time() - baseline.at > BASELINE_MAX_AGE:
            fresh = monitor.probe.measure(BASELINE_SAMPLES)
            if not fresh.known:
                return None
            monitor.set_baseline(fresh)
            return fresh
        return baseline

    def _held(self, decision: Decision) -> bool:
        """Whether the run is held back as far as the guard goes: paused, or slowed to the
        slowest pace (about 6% of its time in small batches)."""
        if decision.action is Action.PAUSE:
            return True
        return decision.action is Action.SLOW and self.state.nice >= NICE_MAX

    def _while_held(self, monitor: ForegroundMonitor, reading: Reading | None) -> None:
        """Readings of one hold (a pause or the slowest pace); after `REBASELINE_AFTER`
        seconds they become the baseline: the run has done next to nothing that long, so
        the latency is the application's own."""
        now = time.time()
        if self._paused_since is None:
            self._paused_since = now
        idle = latest(reading) if reading is not None else None
        if idle is not None and idle.known and (not self._idle or self._idle[-1].at != idle.at):
            self._idle.append(idle)
        if now - self._paused_since >= REBASELINE_AFTER and self._idle:
            fresh = _median_latency(self._idle)
            monitor.set_baseline(fresh)
            self.control.add_event(f"{REASON}: held back for {now - self._paused_since:.0f}s with the latency still "
                                   f"high; baseline re-measured (commit {fresh.commit_ms:.2f} ms, "
                                   f"read {fresh.read_ms:.2f} ms)")
            self._paused_since, self._idle, self.ratios = None, [], []

