"""The goals the benchmark checks, each reported as reached or not, with the numbers."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["evaluate", "markdown"]


def _by(scenarios: list[dict], backfill: str) -> dict[int, dict]:
    return {s["rows"]: s for s in scenarios if s["backfill"] == backfill}


def _target(name: str, reached: bool | None, detail: str) -> dict[str, Any]:
    return {"target": name, "reached": reached, "detail": detail}


def _per_row(scenario: dict, method: str) -> float | None:
    summary = scenario["methods"].get(method)
    return None if summary is None else summary.get("working_us_per_row_median")


def _growth(backfill: str, small: dict, large: dict) -> list[dict[str, Any]]:
    """Cost per row from the smallest size to the largest, for every method measured at
    both: within 1.2x of its own, and (the worker) within 1.1x of the plain UPDATE's growth."""
    out = []
    sizes = f"{large['rows']:,} within 1.2x of {small['rows']:,}"
    plain_a, plain_b = _per_row(small, "plain_update"), _per_row(large, "plain_update")
    for method in ("worker_sleep0", "worker_physical", "runbook_loop"):
        if method not in small["methods"] or method not in large["methods"]:
            continue
        a, b = _per_row(small, method), _per_row(large, method)
        outcomes = large["methods"][method]["outcomes"]
        ok = a is not None and b is not None and b <= 1.2 * a and "ok" in outcomes
        out.append(_target(f"cost per row at {sizes} [{backfill}, {method}]", ok,
                           f"{a} -> {b} µs/row; outcomes {outcomes}"))
        if method != "runbook_loop" and a and b and plain_a and plain_b:
            growth, plain = b / a, plain_b / plain_a
            out.append(_target(f"cost-per-row growth within 1.1x of the plain UPDATE's [{backfill}, {method}]",
                               growth <= 1.1 * plain, f"{growth:.2f}x against {plain:.2f}x"))
    return out


def evaluate(scenarios: list[dict]) -> list[dict[str, Any]]:
    """Every target for every scenario it applies to."""
    out = []
    for s in scenarios:
        m = s["methods"]
        label = f"{s['backfill']} @ {s['rows']:,}"
        for method, name in (("worker_sleep0", "(c)"), ("worker_physical", "(c')")):
            if method in m:
                ratio = m[method]["rows_per_second_median"] / m["plain_update"]["rows_per_second_median"]
                out.append(_target(f"{name} >= 0.9x (a) rows/s [{label}]", ratio >= 0.9, f"{ratio:.2f}x"))
        if "worker_sleep0" in m:
            out.extend(_key_order_targets(label, m))
        if s["foreground_ms"].get("worker_defaults"):
            out.append(_foreground_target(label, s["foreground_ms"]))
    for backfill in sorted({s["backfill"] for s in scenarios}):
        sizes = _by(scenarios, backfill)
        if len(sizes) < 2:
            continue
        small, large = sizes[min(sizes)], sizes[max(sizes)]
        out.extend(_growth(backfill, small, large))
        if "worker_sleep0" not in small["methods"] or "worker_sleep0" not in large["methods"]:
            continue
        rss_a = small["methods"]["worker_sleep0"].get("peak_rss_mb_max")
        rss_b = large["methods"]["worker_sleep0"].get("peak_rss_mb_max")
        out.append(_target(f"worker RSS flat in table size [{backfill}]",
                           rss_a is not None and rss_b is not None and rss_b <= rss_a * 1.2 + 10,
                           f"{rss_a} MB -> {rss_b} MB"))
    return out


def _key_order_targets(label: str, m: dict) -> list[dict[str, Any]]:
    """The framework's overhead and the batch p99, on (c)."""
    out = []
    if "bare_keyset_loop" in m:
        batches = m["worker_sleep0"].get("batches_median") or 1
        overhead = (m["worker_sleep0"]["seconds_median"] - m["bare_keyset_loop"]["seconds_median"]) / batches
        out.append(_target(f"framework overhead <= 5 ms/batch [{label}]", overhead <= 0.005,
                           f"{overhead * 1000:.1f} ms per batch ((c) - bare loop)"))
    outside = m["worker_sleep0"].get("outside_batch_ms_median")
    if outside is not None:
        out.append(_target(f"time outside the batch transaction <= 5 ms/batch, within one run [{label}]",
                           outside <= 5, f"{outside:.1f} ms per batch (run time - batch transactions - sleeps)"))
    p99 = m["worker_sleep0"].get("batch_p99_ms_median")
    out.append(_target(f"batch p99 <= 300 ms at 10k rows [{label}]", p99 is not None and p99 <= 300, f"{p99} ms"))
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    """The targets as a list: reached or not, with the measured numbers."""
    lines = ["| target | reached | measured |", "| --- | --- | --- |"]
    for t in results:
        mark = {True: "yes", False: "**no**", None: "-"}[t["reached"]]
        lines.append(f"| {t['target']} | {mark} | {t['detail']} |")
    return "\n".join(lines)


def _foreground_target(label: str, foreground_ms: dict) -> dict:
    """The load's p99 beside a default run against the same load alone: the window alone
    right before it on the same copy when measured (paired), else the one at the start.
    One or two windows: the worst counts. Three or more (`--foreground-reps`): the median
    ratio counts, the worst is shown beside it (on a machine whose WAL flushes swing from
    minute to minute, one window in three can be an outlier either way)."""
    start = foreground_ms["alone"]["p99_ms"]
    pairs = [(w["p99_ms"], w.get("paired_alone_p99_ms") or start) for w in foreground_ms["worker_defaults"]]
    during, alone = max(pairs, key=lambda p: p[0] / p[1] if p[1] else float("inf"))
    paired = any(w.get("paired_alone_p99_ms") for w in foreground_ms["worker_defaults"])
    yardstick = "alone right before" if paired else "alone"
    detail = f"{during:.1f} ms vs {alone:.1f} ms {yardstick} ({during / alone:.2f}x)" if alone else "-"
    reached = alone > 0 and during <= 1.5 * alone
    if len(pairs) >= 3 and all(a > 0 for _, a in pairs):
        ratios = sorted(d / a for d, a in pairs)
        median = statistics.median(ratios)
        detail = f"median {median:.2f}x of {len(pairs)} windows ({', '.join(f'{r:.2f}x' for r in ratios)}); " \
                 f"worst {detail}"
        reached = median <= 1.5
    if paired:
        detail += f"; {start:.1f} ms alone at the start"
    return _target(f"foreground p99 with defaults <= 1.5x alone [{label}]", reached, detail)
