"""Human views of runs: one status line, and live progress bars (rich) for `--watch`."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from backfills import operations as ops
from backfills.states import TERMINAL

__all__ = ["render_line", "watch", "percent", "format_eta"]


def percent(item: dict[str, object]) -> float:
    """Done fraction (0-100) from rows processed, row errors and the remaining estimate."""
    done = int(item["rows_processed"] or 0) + int(item["row_errors"] or 0)  # type: ignore[arg-type]
    remaining = item.get("rows_remaining_estimate")
    if item["state"] in ("succeeded", "completed_with_errors"):
        return 100.0
    if remaining is None:
        return 0.0
    total = done + int(remaining)  # type: ignore[arg-type]
    return 100.0 * done / total if total else 100.0


def format_eta(seconds: object) -> str:
    """`1h02m`, `3m05s`, `12s` or `-`."""
    if seconds is None:
        return "-"
    s = int(float(seconds))  # type: ignore[arg-type]
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _bar(pct: float, width: int = 20) -> str:
    filled = int(round(pct / 100 * width))
    return "#" * filled + "-" * (width - filled)


def render_line(item: dict[str, object]) -> str:
    """One line: id, backfill, state, bar, rows, rate, ETA, errors, throttle reason."""
    pct = percent(item)
    rate = item.get("rows_per_second")
    line = (f"{item['run_id']}  {item['backfill']:<22} {item['state']:<21} [{_bar(pct)}] {pct:5.1f}%  "
            f"{int(item['rows_processed'] or 0):,} rows  "  # type: ignore[arg-type]
            f"{f'{rate:,.0f} rows/s' if rate else '-'}  ETA {format_eta(item.get('eta_seconds'))}  "
            f"errors {int(item['row_errors'] or 0):,}")  # type: ignore[arg-type]
    if item.get("rows_skipped_while_locked"):
        line += (f"  rows skipped while locked {int(item['rows_skipped_while_locked']):,}"  # type: ignore[call-overload]
                 f" ({int(item.get('rows_still_locked') or 0):,} still locked)")  # type: ignore[call-overload]
    if item.get("throttled"):
        line += f"  throttled: {item['throttled']}"
    if item.get("foreground_latency_ratio") is not None:
        line += f"  foreground latency {_latency(item)}"
    if item.get("last_error"):
        line += f"  reason: {item['last_error']}"
    return line


def _latency(item: dict[str, object]) -> str:
    """The foreground guard's last ratio, as `x1.07`, or `-`."""
    value = item.get("foreground_latency_ratio")
    return f"x{float(value):.2f}" if value is not None else "-"  # type: ignore[arg-type]


def _table(items: list[dict[str, object]]) -> Table:
    table = Table(expand=False)
    for column in ("backfill", "state", "progress", "rows", "rows/s", "ETA", "errors", "throttled", "latency"):
        table.add_column(column)
    for item in items:
        pct = percent(item)
        rate = item.get("rows_per_second")
        table.add_row(str(item["backfill"]), str(item["state"]), f"[{_bar(pct)}] {pct:5.1f}%",
                      f"{int(item['rows_processed'] or 0):,}", f"{rate:,.0f}" if rate else "-",  # type: ignore[arg-type]
                      format_eta(item.get("eta_seconds")), f"{int(item['row_errors'] or 0):,}",  # type: ignore[arg-type]
                      str(item.get("throttled") or "-"), _latency(item))
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
            items = [ops.status_of(res.store.get(i), res.control(i)) for i in ids]
            live.update(_table(items))
            if all(item["state"] in TERMINAL for item in items):
                return
            time.sleep(interval)
