"""A heavier foreground load beside a run with defaults: does the guard hold the ratio?

On a copy of the smallest size's template, pgbench runs the foreground script (point
reads and single-row updates on `aois`) at HEAVY_RATE transactions/s from HEAVY_CLIENTS
clients, three times on fresh copies: alone; beside the worker with defaults (the guard
on, `--max-latency-ratio 1.5`); beside the worker with `--max-latency-ratio 0` (the guard
off, everything else at defaults). For the two runs it records how many rows the run
changed in the window and the seconds it spent throttled per reason (the run's
`backfill.throttle_time`, written at the end of each slice, also when the worker stops).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import foreground, harness

__all__ = ["HEAVY_RATE", "HEAVY_CLIENTS", "GuardWindow", "heavy_load", "markdown"]

HEAVY_RATE = 1000
HEAVY_CLIENTS = 4
WINDOW_SECONDS = 30.0
GUARD_OFF = ["--max-latency-ratio", "0"]

Measure = Callable[[str, str], Any]


@dataclass(frozen=True)
class GuardWindow:
    """The heavy load beside one run: its latency, the rows the run changed while it ran,
    and the run's throttle time since its enqueue (the settling time and the window)."""

    latency: foreground.Latency
    rows: int
    throttle_seconds: dict[str, float]
    settle_seconds: float = 0.0


def _load(url: str, keys: int, seconds: float) -> foreground.Latency:
    return foreground.pgbench(url, keys, seconds, rate=HEAVY_RATE, clients=HEAVY_CLIENTS)


def beside_run(settings_for: Callable[[str], Any], backfill: str, options: list[str], keys: int,
               seconds: float = WINDOW_SECONDS, settle_seconds: float = 0.0) -> Measure:
    """A measurement (for `on_copy`): the heavy load for `seconds`, `settle_seconds` after
    the enqueue, while a real worker runs `backfill`."""
    def measure(url: str, db: str) -> GuardWindow:
        settings = settings_for(db)
        latency, run_id, rows_before = harness.load_beside_run(
            settings, backfill, options, lambda: _load(url, keys, seconds), settle_seconds)
        rows, throttled = harness.run_totals(settings, run_id)
        return GuardWindow(latency, rows - rows_before, throttled, settle_seconds)
    return measure


def heavy_load(on_copy: Callable[[Measure], Any], settings_for: Callable[[str], Any], backfill: str,
               keys: int, seconds: float = WINDOW_SECONDS, settle_seconds: float = 0.0) -> dict[str, Any]:
    """The three windows of `seconds` each, as plain data for the results file. With the
    guard on, the load starts `settle_seconds` after the enqueue (past the guard's start)."""
    alone: foreground.Latency = on_copy(lambda url, db: _load(url, keys, seconds))
    on: GuardWindow = on_copy(beside_run(settings_for, backfill, [], keys, seconds, settle_seconds))
    off: GuardWindow = on_copy(beside_run(settings_for, backfill, GUARD_OFF, keys, seconds))
    return {"backfill": backfill, "rate": HEAVY_RATE, "clients": HEAVY_CLIENTS, "seconds": seconds,
            "alone": vars(alone), "guard_on": _plain(on), "guard_off": _plain(off)}


def _plain(window: GuardWindow) -> dict[str, Any]:
    return {"latency": vars(window.latency), "rows": window.rows, "throttle_seconds": window.throttle_seconds,
            "settle_seconds": window.settle_seconds}


def _row(label: str, latency: dict[str, Any], alone_p99: float, rows: str, throttled: str) -> str:
    ratio = f"{latency['p99_ms'] / alone_p99:.2f}x" if alone_p99 else "-"
    return (f"| {label} | {latency['transactions']:,} | {latency['p50_ms']} / {latency['p99_ms']} | {ratio} | "
            f"{rows} | {throttled} |")


def markdown(heavy: dict[str, Any]) -> str:
    """The heavy-load windows as a table: the load's p50/p99 and p99 against alone, the
    run's rows in the window and its throttle seconds per reason."""
    alone_p99 = float(heavy["alone"]["p99_ms"])
    settle = float(heavy["guard_on"].get("settle_seconds", 0.0))
    start = f"; with the guard on it starts {settle:.0f} s after the enqueue, past the guard's start" if settle else ""
    lines = [f"Heavy foreground load ({heavy['rate']:,} tx/s target, {heavy['clients']} clients, "
             f"{heavy['seconds']:.0f} s{start}) beside `{heavy['backfill']}` with defaults:", "",
             "| load | transactions | p50 / p99 ms | p99 vs alone | run's rows in the window | "
             "throttled s (since the enqueue) |",
             "| --- | ---: | --- | ---: | ---: | --- |",
             _row("alone", heavy["alone"], alone_p99, "-", "-")]
    for key, label in (("guard_on", "beside the run, guard on (defaults)"),
                       ("guard_off", "beside the run, guard off (`--max-latency-ratio 0`)")):
        window = heavy[key]
        spent = ", ".join(f"{r} {s:.1f}" for r, s in window["throttle_seconds"].items() if s) or "-"
        lines.append(_row(label, window["latency"], alone_p99, f"{window['rows']:,}", spent))
    return "\n".join(lines)
