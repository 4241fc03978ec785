"""Human views of runs: one status line, and live progress bars (rich) for `--watch`."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from backfills import operations as ops
from backfills.states import TERMINAL
from backfills.status import RunStatus, read_status

__all__ = ["render_line", "watch", "format_eta"]


def format_eta(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `12s` or `-`."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _bar(pct: float, width: int = 20) -> str:
    filled = int(round(pct / 100 * width))
    return "#" * filled + "-" * (width - filled)


def _throttled(status: RunStatus) -> str:
    return ", ".join(status.throttled)


def render_line(status: RunStatus) -> str:
    """One line: id, backfill, state, bar, rows, rate, ETA, errors, throttle reason."""
    run, pct, rate = status.run, status.percent, status.rows_per_second
    line = (f"{run.id}  {run.backfill:<22} {run.state:<21} [{_bar(pct)}] {pct:5.1f}%  "
            f"{run.rows_processed:,} rows  "
            f"{f'{rate:,.0f} rows/s' if rate else '-'}  ETA {format_eta(status.eta_seconds)}  "
            f"errors {run.row_errors:,}")
    if run.rows_skipped:
        line += f"  rows skipped while locked {run.rows_skipped:,} ({run.rows_still_locked:,} still locked)"
    if status.throttled:
        line += f"  throttled: {_throttled(status)}"
    if status.foreground_latency_ratio is not None:
        line += f"  foreground latency {_latency(status)}"
    if run.last_error:
        line += f"  reason: {run.last_error}"
    return line


def _latency(status: RunStatus) -> str:
    """The foreground guard's last ratio, as `x1.07`, or `-`."""
    value = status.foreground_latency_ratio
    return f"x{value:.2f}" if value is not None else "-"


def _table(statuses: list[RunStatus]) -> Table:
    table = Table(expand=False)
    for column in ("backfill", "state", "progress", "rows", "rows/s", "ETA", "errors", "throttled", "latency"):
        table.add_column(column)
    for status in statuses:
        run, pct, rate = status.run, status.percent, status.rows_per_second
        table.add_row(run.backfill, str(run.state), f"[{_bar(pct)}] {pct:5.1f}%", f"{run.rows_processed:,}",
                      f"{rate:,.0f}" if rate else "-", format_eta(status.eta_seconds), f"{run.row_errors:,}",
                      _throttled(status) or "-", _latency(status))
    return table


def watch(res: ops.Resources, run_id: str | list[str] | None, interval: float = 1.0,
          console: Console | None = None) -> None:
    """Live progress of one run, some runs, or every active run, until they have all ended."""
    if isinstance(run_id, list):
        ids = run_id
    else:
        ids = [run_id] if run_id else [r.id for r in res.store.active()]
    if not ids:
        (console or Console()).print("no active runs")
        return
    with Live(console=console or Console(), refresh_per_second=4) as live:
        while True:
            statuses = [read_status(res.store.get(i), res.control(i)) for i in ids]
            live.update(_table(statuses))
            if all(status.run.state in TERMINAL for status in statuses):
                return
            time.sleep(interval)
