"""The benchmark's arithmetic: summaries, targets, the README table, its arguments. No IO
beyond a temporary README."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report, targets
from bench.__main__ import bare_loop_sizes, guard_on, repetitions, runbook_due, worker_methods
from bench.harness import percentile
from bench.methods import Measurement


def _m(method: str, seconds: float, rows: int = 1_000_000, **kw: object) -> Measurement:
    return Measurement(method, seconds, rows, **kw)  # type: ignore[arg-type]


def _scenario(rows: int, plain: float, sleep0: float, bare: float | None, during_ms: float,
              alone_ms: float = 4.0, p99: float = 0.25, rss: float = 80.0, runbook_outcome: str = "ok") -> dict:
    runs = {
        "plain_update": [_m("plain_update", plain, rows)],
        "worker_sleep0": [_m("worker_sleep0", sleep0, rows, batches=rows // 10_000, batch_p50=0.2,
                             batch_p99=p99, peak_rss_mb=rss)],
        "worker_defaults": [_m("worker_defaults", sleep0 * 1.5, rows, batches=rows // 10_000,
                               sleep_seconds=0.1 * rows / 10_000, peak_rss_mb=rss)],
        "runbook_loop": [_m("runbook_loop", plain * 3, rows, batches=rows // 10_000,
                            sleep_seconds=0.1 * rows / 10_000, outcome=runbook_outcome)],
    }
    if bare is not None:
        runs["bare_keyset_loop"] = [_m("bare_keyset_loop", bare, rows, batches=rows // 10_000)]
    return {
        "backfill": "aois_status", "rows": rows,
        "methods": {m: report.summarize(r) for m, r in runs.items()},
        "foreground_ms": {"alone": {"p99_ms": alone_ms}, "worker_defaults": [{"p99_ms": during_ms}]},
    }


def _reached(results: list[dict], prefix: str) -> list[bool | None]:
    return [t["reached"] for t in results if t["target"].startswith(prefix)]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_summary_takes_medians_and_the_extremes() -> None:
    runs = [_m("plain_update", s) for s in (10.0, 20.0, 40.0)]
    summary = report.summarize(runs)
    assert summary["repetitions"] == 3
    assert summary["seconds_median"] == 20.0
    assert (summary["rows_per_second_min"], summary["rows_per_second_median"],
            summary["rows_per_second_max"]) == (25_000.0, 50_000.0, 100_000.0)


def test_cost_per_row_leaves_out_the_designed_sleeps() -> None:
    run = _m("worker_defaults", 30.0, 100_000, batches=10, sleep_seconds=10.0)
    assert run.seconds_per_row_working == pytest.approx(20.0 / 100_000)


def test_throughput_target_is_the_ratio_to_the_plain_update() -> None:
    assert _reached(targets.evaluate([_scenario(1_000_000, 20, 21, 20, 5)]), "(c) >= 0.9x") == [True]
    assert _reached(targets.evaluate([_scenario(1_000_000, 20, 25, 20, 5)]), "(c) >= 0.9x") == [False]


def test_overhead_target_needs_the_bare_loop_and_is_per_batch() -> None:
    # 100 batches; (c) 0.4 s longer than the bare loop is 4 ms a batch, 0.6 s is 6 ms
    assert _reached(targets.evaluate([_scenario(1_000_000, 20, 20.4, 20.0, 5)]), "framework") == [True]
    assert _reached(targets.evaluate([_scenario(1_000_000, 20, 20.6, 20.0, 5)]), "framework") == [False]
    assert _reached(targets.evaluate([_scenario(1_000_000, 20, 20.6, None, 5)]), "framework") == []


def test_foreground_and_batch_latency_targets() -> None:
    results = targets.evaluate([_scenario(1_000_000, 20, 20, 20, during_ms=6.0, alone_ms=4.0, p99=0.31)])
    assert _reached(results, "foreground") == [True]
    assert _reached(results, "batch p99") == [False]
    assert _reached(targets.evaluate([_scenario(1_000_000, 20, 20, 20, during_ms=6.1)]), "foreground") == [False]


def test_the_foreground_target_takes_the_window_alone_right_before_each_run_window() -> None:
    """A paired window: 6 ms beside the run is 1.5x its own 4 ms alone right before, whatever
    the load did alone at the start (2 ms); the worst pair counts."""
    scenario = _scenario(1_000_000, 20, 20, 20, during_ms=6.0, alone_ms=2.0)
    scenario["foreground_ms"]["worker_defaults"] = [{"p99_ms": 6.0, "paired_alone_p99_ms": 4.0}]
    [target] = [t for t in targets.evaluate([scenario]) if "foreground" in t["target"]]
    assert target["reached"] is True
    assert target["detail"] == "6.0 ms vs 4.0 ms alone right before (1.50x); 2.0 ms alone at the start"
    scenario["foreground_ms"]["worker_defaults"].append({"p99_ms": 5.0, "paired_alone_p99_ms": 2.5})
    [target] = [t for t in targets.evaluate([scenario]) if "foreground" in t["target"]]
    assert target["reached"] is False and target["detail"].startswith("5.0 ms vs 2.5 ms")
    table = report.foreground_table([scenario])
    assert "| p99 alone right before, ms |" in table and "| - / 6.0 | 4.0 |" in table


def test_with_three_windows_or_more_the_median_paired_ratio_is_judged_and_the_worst_shown() -> None:
    scenario = _scenario(1_000_000, 20, 20, 20, during_ms=6.0, alone_ms=2.0)
    scenario["foreground_ms"]["worker_defaults"] = [
        {"p99_ms": 3.0, "paired_alone_p99_ms": 2.5}, {"p99_ms": 30.0, "paired_alone_p99_ms": 3.0},
        {"p99_ms": 4.0, "paired_alone_p99_ms": 3.0}]
    [target] = [t for t in targets.evaluate([scenario]) if "foreground" in t["target"]]
    assert target["reached"] is True  # 1.20x, 1.33x, 10x: the median is 1.33x
    assert target["detail"].startswith("median 1.33x of 3 windows (1.20x, 1.33x, 10.00x); worst 30.0 ms vs 3.0 ms")
    scenario["foreground_ms"]["worker_defaults"][0]["p99_ms"] = 5.0  # 2.00x: the median is 2.00x
    [target] = [t for t in targets.evaluate([scenario]) if "foreground" in t["target"]]
    assert target["reached"] is False


def test_a_bench_of_the_defaults_alone_judges_only_what_it_measured() -> None:
    scenario = _scenario(1_000_000, 20, 20, None, during_ms=3.0, alone_ms=2.0)
    del scenario["methods"]["worker_sleep0"]
    names = [t["target"] for t in targets.evaluate([scenario, {**scenario, "rows": 5_000_000}])]
    assert any(n.startswith("foreground") for n in names)
    assert not any(n.startswith(("batch p99", "framework", "time outside", "worker RSS")) for n in names)


def test_size_targets_compare_the_largest_size_with_the_smallest() -> None:
    small = _scenario(1_000_000, 20, 20, 20, 5, rss=80)
    flat = _scenario(5_000_000, 100, 110, None, 5, rss=85)
    steep = _scenario(5_000_000, 100, 130, None, 5, rss=200, runbook_outcome="did not finish within 300s")
    assert _reached(targets.evaluate([small, flat]), "cost per row") == [True, True]
    assert _reached(targets.evaluate([small, flat]), "worker RSS") == [True]
    # (c) 26 µs/row against 20, and a runbook loop that did not finish, miss; so does 200 MB
    assert _reached(targets.evaluate([small, steep]), "cost per row") == [False, False]
    assert _reached(targets.evaluate([small, steep]), "worker RSS") == [False]
    assert _reached(targets.evaluate([small]), "cost per row") == []
    # plain 20 -> 20 µs/row; (c) 20 -> 22 is within 1.1x of that growth, 20 -> 26 is not
    assert _reached(targets.evaluate([small, flat]), "cost-per-row growth") == [True]
    assert _reached(targets.evaluate([small, steep]), "cost-per-row growth") == [False]


def test_size_targets_skip_a_method_not_measured_at_both_sizes() -> None:
    small = _scenario(1_000_000, 20, 20, 20, 5)
    large = _scenario(5_000_000, 100, 110, None, 5)
    del large["methods"]["runbook_loop"]  # --runbook-reps 0
    assert len(_reached(targets.evaluate([small, large]), "cost per row")) == 1


def test_table_has_a_row_per_method_with_its_repetitions(tmp_path: Path) -> None:
    table = report.markdown_table([_scenario(1_000_000, 20, 25, None, 5)])
    rows = [line for line in table.splitlines() if line.startswith("| aois_status")]
    assert len(rows) == 4
    assert "| (c) worker, --sleep 0 --max-latency-ratio 0, key order | 1 | 40,000 (40,000-40,000) | 0.80x |" in table
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\ntail\n")
    report.update_readme(readme, table)
    text = readme.read_text()
    assert "old" not in text and table in text and text.endswith("tail\n")


def test_repetitions_and_bare_loop_sizes_refuse_what_does_not_fit() -> None:
    assert repetitions("3", 2) == [3, 3]
    assert repetitions("3,1", 2) == [3, 1]
    for bad in ("3,1,1", "0", "2,0"):
        with pytest.raises(SystemExit):
            repetitions(bad, 2)
    assert bare_loop_sizes("smallest", [5_000_000, 1_000_000]) == {1_000_000}
    assert bare_loop_sizes("all", [1, 5]) == {1, 5} and bare_loop_sizes("none", [1, 5]) == set()
    with pytest.raises(SystemExit):
        bare_loop_sizes("7", [1, 5])
    assert worker_methods("worker_defaults") == ("worker_defaults",)
    assert worker_methods("worker_physical, worker_defaults") == ("worker_physical", "worker_defaults")
    for bad in ("", "worker_fast", "worker_defaults,plain_update"):
        with pytest.raises(SystemExit):
            worker_methods(bad)


def test_time_outside_the_batches_is_per_batch_and_leaves_out_the_sleeps() -> None:
    run = _m("worker_defaults", 40.0, 1_000_000, batches=100, sleep_seconds=10.0, in_batches_seconds=29.5)
    assert run.outside_batch_ms == pytest.approx(5.0)
    assert _m("plain_update", 20.0).outside_batch_ms is None
    fast = _scenario(1_000_000, 20, 20, 20, 5)
    fast["methods"]["worker_sleep0"] = report.summarize(
        [_m("worker_sleep0", 20.0, batches=100, in_batches_seconds=19.6, batch_p99=0.2)])
    assert _reached(targets.evaluate([fast]), "time outside") == [True]
    fast["methods"]["worker_sleep0"] = report.summarize(
        [_m("worker_sleep0", 20.0, batches=100, in_batches_seconds=19.0, batch_p99=0.2)])
    assert _reached(targets.evaluate([fast]), "time outside") == [False]


def test_wal_is_reported_per_row_with_the_checkpoints_taken() -> None:
    runs = [_m("worker_sleep0", 20.0, 1_000, wal_bytes=w, checkpoints=c) for w, c in ((400_000, 0), (600_000, 2))]
    summary = report.summarize(runs)
    assert summary["wal_bytes_per_row_median"] == 500
    assert summary["checkpoints_max"] == 2
    assert "wal_bytes_per_row_median" not in report.summarize([_m("plain_update", 20.0)])


def test_the_runbook_loop_repeats_while_it_finishes() -> None:
    assert runbook_due(0, 1, [])
    assert runbook_due(1, 1, ["ok"]) and runbook_due(2, 1, ["ok", "ok"])
    assert not runbook_due(1, 1, ["stopped: numeric field overflow"])
    assert not runbook_due(2, 1, ["ok", "did not finish within 78s"])
    assert runbook_due(1, 2, ["did not finish within 78s"])  # asked for: it runs anyway


def test_autovacuum_runs_are_reported_as_the_most_any_repetition_saw() -> None:
    runs = [_m("worker_sleep0", 100, autovacuums=0), _m("worker_sleep0", 100, autovacuums=2), _m("worker_sleep0", 100)]
    assert report.summarize(runs)["autovacuums_max"] == 2
    assert "autovacuums_max" not in report.summarize([_m("plain_update", 10)])


def test_servers_are_reported_side_by_side_each_against_its_own_plain_update(tmp_path: Path) -> None:
    import json

    embedded = [_scenario(1_000_000, plain=10, sleep0=20, bare=None, during_ms=5)]
    production = [_scenario(1_000_000, plain=10, sleep0=40, bare=None, during_ms=5)]
    for server, scenarios in (("embedded", embedded), ("production", production)):
        (tmp_path / report.results_name(server)).write_text(json.dumps({
            "machine": {"server": {"server_version": "15.8", "shared_buffers": "256MB", "jit": "on"}},
            "scenarios": scenarios, "targets": targets.evaluate(scenarios)}))
    section = report.readme_section(tmp_path)
    table = section.split("\n\n")[0]
    assert "embedded rows/s" in table and "production rows/s" in table
    [sleep0] = [line for line in table.splitlines() if "(c) worker, --sleep 0" in line]
    assert "| 0.50x |" in sleep0 and "| 0.25x |" in sleep0  # each server's (c) against its own (a)
    assert "bench/results/throughput-production.png" in section and "**production**: PostgreSQL 15.8" in section
    (tmp_path / report.results_name("production")).unlink()
    assert "production rows/s" not in report.readme_section(tmp_path)  # one server: its own table only


def test_the_production_server_refuses_missing_binaries_before_starting(tmp_path: Path) -> None:
    from bench.harness import BenchSetupError, production_binaries

    with pytest.raises(BenchSetupError, match="set BACKFILL_PG_BIN or give --pg-bin"):
        production_binaries(None)
    with pytest.raises(BenchSetupError, match="no initdb, pg_ctl, postgres there"):
        production_binaries(str(tmp_path))


def test_throttle_time_per_reason_is_summarized_as_medians_and_shown() -> None:
    runs = [_m("worker_defaults", 10.0, 1000, throttle_seconds={"foreground_latency": 4.0}),
            _m("worker_defaults", 12.0, 1000, throttle_seconds={"foreground_latency": 2.0, "autovacuum": 1.0}),
            _m("worker_defaults", 11.0, 1000, throttle_seconds={})]
    summary = report.summarize(runs)
    assert summary["throttle_seconds_median"] == {"autovacuum": 0.0, "foreground_latency": 2.0}
    assert report._throttled(summary) == "foreground_latency 2.0"
    assert report._throttled(report.summarize([_m("plain_update", 1.0, 10)])) == "-"


def _latency(p50: float, p99: float, transactions: int = 29_000) -> dict:
    return {"transactions": transactions, "p50_ms": p50, "p99_ms": p99}


def test_the_heavy_load_table_shows_each_window_against_the_load_alone(tmp_path: Path) -> None:
    import json

    from bench import heavy

    found = {"backfill": "aois_status", "rate": 1000, "clients": 4, "seconds": 30.0, "alone": _latency(1.0, 4.0),
             "guard_on": {"latency": _latency(1.2, 5.0), "rows": 120_000,
                          "throttle_seconds": {"foreground_latency": 12.5, "autovacuum": 0.0}},
             "guard_off": {"latency": _latency(2.0, 16.0), "rows": 600_000, "throttle_seconds": {}}}
    table = heavy.markdown(found)
    [on] = [line for line in table.splitlines() if "guard on" in line]
    [off] = [line for line in table.splitlines() if "guard off" in line]
    assert "| 1.25x |" in on and "120,000" in on and "foreground_latency 12.5" in on and "autovacuum" not in on
    assert "| 4.00x |" in off and "600,000" in off and off.endswith("| - |")
    assert "1,000 tx/s" in table
    scenarios = [_scenario(1_000_000, plain=10, sleep0=20, bare=None, during_ms=5)]
    (tmp_path / report.results_name("embedded")).write_text(json.dumps({
        "machine": {"server": {}}, "scenarios": scenarios, "targets": targets.evaluate(scenarios)}))
    assert "Heavy foreground load" not in report.readme_section(tmp_path)
    (tmp_path / report.heavy_name("embedded")).write_text(json.dumps(found))
    assert table in report.readme_section(tmp_path)
    settled = heavy.markdown({**found, "guard_on": {**found["guard_on"], "settle_seconds": 25.0}})
    assert "starts 25 s after the enqueue" in settled and "starts" not in table


def test_a_run_has_the_guard_on_unless_its_options_turn_it_off() -> None:
    assert guard_on([]) and guard_on(["--sleep", "0"]) and guard_on(["--max-latency-ratio", "1.2"])
    assert not guard_on(["--sleep", "0", "--max-latency-ratio", "0", "--order", "key"])
    assert not guard_on(["--max-latency-ratio", "0.0"])
