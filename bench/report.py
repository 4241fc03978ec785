"""Turning measurements into the results JSON, a PNG plot and the README table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from bench.methods import Measurement

__all__ = ["summarize", "plot", "markdown_table", "update_readme"]

LABELS = {
    "plain_update": "(a) plain UPDATE",
    "runbook_loop": "(b) runbook loop",
    "worker_sleep0": "(c) worker, --sleep 0",
    "worker_defaults": "(d) worker, defaults",
    "bare_keyset_loop": "bare keyset loop",
}
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def summarize(runs: Sequence[Measurement]) -> dict[str, object]:
    """Median and min-max over repetitions."""
    rates = [m.rows_per_second for m in runs]
    seconds = [m.seconds for m in runs]
    summary: dict[str, object] = {
        "repetitions": len(runs),
        "rows": runs[0].rows if runs else 0,
        "seconds_median": round(statistics.median(seconds), 3),
        "rows_per_second_median": round(statistics.median(rates), 1),
        "rows_per_second_min": round(min(rates), 1),
        "rows_per_second_max": round(max(rates), 1),
        "outcomes": sorted({m.outcome for m in runs}),
    }
    per_row = [m.seconds_per_row_working for m in runs if m.seconds_per_row_working]
    if per_row:
        summary["working_us_per_row_median"] = round(statistics.median(per_row) * 1e6, 2)
    for field in ("batch_p50", "batch_p99"):
        values = [getattr(m, field) for m in runs if getattr(m, field) is not None]
        if values:
            summary[f"{field}_ms_median"] = round(statistics.median(values) * 1000, 1)
    rss = [m.peak_rss_mb for m in runs if m.peak_rss_mb]
    if rss:
        summary["peak_rss_mb_max"] = round(max(rss), 1)
    wal = [m.wal_bytes / m.rows for m in runs if m.wal_bytes is not None and m.rows]
    if wal:
        summary["wal_bytes_per_row_median"] = round(statistics.median(wal))
        summary["checkpoints_max"] = max(m.checkpoints or 0 for m in runs)
    vacuums = [m.autovacuums for m in runs if m.autovacuums is not None]
    if vacuums:
        summary["autovacuums_max"] = max(vacuums)
    outside = [m.outside_batch_ms for m in runs if m.outside_batch_ms is not None]
    if outside:
        summary["outside_batch_ms_median"] = round(statistics.median(outside), 2)
    batches = [m.batches for m in runs if m.batches]
    if batches:
        summary["batches_median"] = statistics.median(batches)
    return summary


def plot(scenarios: list[dict], path: Path) -> None:
    """Grouped bars of rows/s (median, min-max whiskers) per method and scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in LABELS if any(m in s["methods"] for s in scenarios)]
    fig, ax = plt.subplots(figsize=(max(8, 2.2 * len(scenarios)), 5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for j, scenario in enumerate(scenarios):
            data = scenario["methods"].get(method)
            if not data:
                continue
            xs.append(j + i * width)
            ys.append(data["rows_per_second_median"])
            lo.append(data["rows_per_second_median"] - data["rows_per_second_min"])
            hi.append(data["rows_per_second_max"] - data["rows_per_second_median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=LABELS[method])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(scenarios))])
    ax.set_xticklabels([f"{s['backfill']}\n{s['rows']:,} rows" for s in scenarios], fontsize=8)
    ax.set_ylabel("rows per second (median, min-max)")
    ax.set_title("Backfill throughput on identical copies, same run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(scenarios: list[dict]) -> str:
    """One row per scenario and method: rows/s, ratio to (a), batch p50/p99, RSS."""
    lines = ["| backfill | rows | method | runs | rows/s (median, min-max) | vs (a) | batch p50 / p99 ms | "
             "peak RSS MB | WAL B/row | outcome |",
             "| --- | ---: | --- | ---: | --- | ---: | --- | ---: | ---: | --- |"]
    for s in scenarios:
        plain = s["methods"].get("plain_update", {}).get("rows_per_second_median")
        for method, data in s["methods"].items():
            ratio = f"{data['rows_per_second_median'] / plain:.2f}x" if plain else "-"
            batch = (f"{data.get('batch_p50_ms_median', '-')} / {data.get('batch_p99_ms_median', '-')}"
                     if "batch_p50_ms_median" in data else "-")
            lines.append(f"| {s['backfill']} | {s['rows']:,} | {LABELS[method]} | {data['repetitions']} | "
                         f"{data['rows_per_second_median']:,.0f} ({data['rows_per_second_min']:,.0f}-"
                         f"{data['rows_per_second_max']:,.0f}) | {ratio} | {batch} | "
                         f"{data.get('peak_rss_mb_max', '-')} | {data.get('wal_bytes_per_row_median', '-')} | "
                         f"{', '.join(data['outcomes'])} |")
    return "\n".join(lines)


def update_readme(readme: Path, section: str) -> None:
    """Replace the text between the bench markers (appending them if absent)."""
    text = readme.read_text()
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Benchmarks\n\n" + block + "\n"
    readme.write_text(text)
