"""Turning measurements into the results JSON, a PNG plot and the README table."""

from __future__ import annotations

import statistics
import json
from collections.abc import Sequence
from pathlib import Path

from bench import heavy
from bench.methods import Measurement

__all__ = ["summarize", "plot", "markdown_table", "servers_table", "readme_section", "update_readme",
           "results_name", "plot_name"]

LABELS = {
    "plain_update": "(a) plain UPDATE",
    "plain_update_subquery": "(a') plain UPDATE, the definition's subquery",
    "runbook_loop": "(b) runbook loop",
    "worker_sleep0": "(c) worker, --sleep 0 --max-latency-ratio 0, key order",
    "worker_physical": "(c') worker, --sleep 0 --max-latency-ratio 0, physical order",
    "worker_defaults": "(d) worker, defaults",
    "bare_keyset_loop": "bare keyset loop",
    "bare_block_loop": "bare block-range loop",
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
    throttled = [m.throttle_seconds for m in runs if m.throttle_seconds is not None]
    if throttled:
        reasons = sorted({r for t in throttled for r in t})
        summary["throttle_seconds_median"] = {r: statistics.median(t.get(r, 0.0) for t in throttled) for r in reasons}
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


def _throttled(summary: dict) -> str:
    """Median seconds throttled per reason, e.g. `foreground_latency 4.1`, or `-`."""
    spent = summary.get("throttle_seconds_median") or {}
    return ", ".join(f"{reason} {seconds:.1f}" for reason, seconds in spent.items() if seconds) or "-"


def markdown_table(scenarios: list[dict]) -> str:
    """One row per scenario and method: rows/s, ratio to (a), batch p50/p99, RSS."""
    lines = ["| backfill | rows | method | runs | rows/s (median, min-max) | vs (a) | batch p50 / p99 ms | "
             "peak RSS MB | WAL B/row | throttled s | outcome |",
             "| --- | ---: | --- | ---: | --- | ---: | --- | ---: | ---: | --- | --- |"]
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
                         f"{_throttled(data)} | {', '.join(data['outcomes'])} |")
    return "\n".join(lines)


def results_name(server: str) -> str:
    """The results file of one server profile (`bench.json` for the embedded one)."""
    return "bench.json" if server == "embedded" else f"bench-{server}.json"


def heavy_name(server: str) -> str:
    """The heavy-load results file of one server profile."""
    return "heavy-load.json" if server == "embedded" else f"heavy-load-{server}.json"


def plot_name(server: str) -> str:
    """The throughput plot of one server profile."""
    return "throughput.png" if server == "embedded" else f"throughput-{server}.png"


def _cell(data: dict | None, plain: float | None) -> str:
    if not data:
        return "- | - | -"
    ratio = f"{data['rows_per_second_median'] / plain:.2f}x" if plain else "-"
    return f"{data['rows_per_second_median']:,.0f} | {ratio} | {data.get('batch_p99_ms_median', '-')}"


def servers_table(by_server: dict[str, list[dict]]) -> str:
    """Each backfill, size and method on every server side by side: rows/s, ratio to that
    server's (a), batch p99."""
    names = list(by_server)
    index = {name: {(s["backfill"], s["rows"]): s for s in scenarios} for name, scenarios in by_server.items()}
    keys = list(dict.fromkeys(k for name in names for k in index[name]))
    head = " | ".join(f"{n} rows/s | {n} vs (a) | {n} batch p99 ms" for n in names)
    lines = [f"| backfill | rows | method | {head} |",
             "| --- | ---: | --- |" + " ---: | ---: | ---: |" * len(names)]
    for backfill, rows in keys:
        found = {n: index[n].get((backfill, rows)) for n in names}
        methods = [m for m in LABELS if any(s and m in s["methods"] for s in found.values())]
        for method in methods:
            cells = []
            for n in names:
                scenario = found[n]
                plain = scenario["methods"].get("plain_update", {}).get("rows_per_second_median") if scenario else None
                cells.append(_cell(scenario["methods"].get(method) if scenario else None, plain))
            lines.append(f"| {backfill} | {rows:,} | {LABELS[method]} | {' | '.join(cells)} |")
    return "\n".join(lines)


def readme_section(out: Path) -> str:
    """The README's benchmark section from every server's results file in `out`: the servers
    side by side (when more than one has results), then each server's table and targets."""
    from bench.targets import markdown

    loaded = {server: json.loads((out / results_name(server)).read_text())
              for server in ("embedded", "production") if (out / results_name(server)).exists()}
    parts = [servers_table({s: r["scenarios"] for s, r in loaded.items()})] if len(loaded) > 1 else []
    for server, results in loaded.items():
        conf = results.get("machine", {}).get("server", {})
        title = (f"**{server}**: PostgreSQL {conf.get('server_version', '?')}, shared_buffers "
                 f"{conf.get('shared_buffers', '?')}, JIT {conf.get('jit', '?')} "
                 f"(available: {conf.get('jit_available', '?')})")
        parts += [title, markdown_table(results["scenarios"]), markdown(results["targets"]),
                  foreground_table(results["scenarios"])]
        if (out / heavy_name(server)).exists():
            parts.append(heavy.markdown(json.loads((out / heavy_name(server)).read_text())))
        parts.append(f"![throughput {server}](bench/results/{plot_name(server)})")
    return "\n\n".join(parts) + "\n"


def _top_waits(window: dict, count: int = 3) -> str:
    """The load's most frequent wait events, as a share of its active samples."""
    waits = window.get("waits") or {}
    total = sum(waits.values())
    return ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in list(waits.items())[:count]) if total else "-"


def _cpu(window: dict) -> str:
    cpu = window.get("cpu_seconds") or {}
    return ", ".join(f"{name} {seconds}" for name, seconds in list(cpu.items())[:3]) or "-"


def foreground_table(scenarios: list[dict]) -> str:
    """One row per foreground window: the load's p50/p99 (and its p99 alone on the same copy
    right before, where measured), and what the server did meanwhile
    (WAL, its write and sync time, full-page images, checkpoints, the load's wait events,
    its lock waits on a backfill session, CPU seconds per kind of server process)."""
    lines = ["| backfill | rows | during | p50 / p99 ms | p99 alone right before, ms | WAL MB | WAL write / sync ms | "
             "FPIs | checkpoints | load waits (share of samples) | lock waits on the backfill | CPU s |",
             "| --- | ---: | --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | --- |"]
    for s in scenarios:
        windows = [("alone", s["foreground_ms"]["alone"])] + [
            (m, w[0]) for m, w in s["foreground_ms"].items() if m != "alone" and w]
        for label, latency in windows:
            window = latency.get("window") or {}
            wal = window.get("wal_bytes")
            lines.append(f"| {s['backfill']} | {s['rows']:,} | {LABELS.get(label, label)} | "
                         f"{latency.get('p50_ms', '-')} / {latency.get('p99_ms', '-')} | "
                         f"{latency.get('paired_alone_p99_ms') or '-'} | "
                         f"{round(wal / 1e6, 1) if wal is not None else '-'} | "
                         f"{window.get('wal_write_ms', '-')} / {window.get('wal_sync_ms', '-')} | "
                         f"{window.get('full_page_images', '-')} | {window.get('checkpoints', '-')} | "
                         f"{_top_waits(window)} | {window.get('lock_waits_on_backfill', '-')} | {_cpu(window)} |")
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
