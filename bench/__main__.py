"""`make bench`: every method on identical copies, in one run, reported as ratios.

    python -m bench [--sizes 1000000,5000000] [--reps 3 | --reps 3,1] [--runbook-reps 1] [--backfills a,b] [--quick]
                    [--server embedded | --server production --pg-bin /usr/lib/postgresql/15/bin]
                    [--methods worker_sleep0,worker_physical,worker_defaults] [--foreground-reps 1]

`--reps` is one count for every size, or one per size. `--server production` runs the
PostgreSQL binaries of `--pg-bin` (default BACKFILL_PG_BIN) with a managed service's
settings (harness.PRODUCTION_CONF: 256MB shared buffers, JIT on).

Writes bench/results/bench.json (`bench-production.json` for the production server;
rewritten after every scenario, so a long run that is stopped still leaves what it
measured), the heavy-load windows (bench.heavy) in `heavy-load.json` (or
`heavy-load-production.json`), a throughput plot, and the README section from every
server's results. `--heavy-load-only` measures the heavy load alone. `--methods` picks the
worker's methods (the plain UPDATE always runs: every ratio is against it), and
`--foreground-reps` how many repetitions measure the foreground load beside them: e.g.
`--methods worker_defaults --foreground-reps 3 --reps 3` judges the defaults' p99 on three
paired windows per backfill.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench import foreground, harness, heavy, methods, report, targets
from bench.methods import Measurement
from core.databases import drop_database
from core.db import with_database
from core.settings import Settings

BACKFILLS = ("aois_status", "aois_area_ha_numeric", "jobs_tenant_id", "ai_assistant_threads_copy")
FOREGROUND_SECONDS = 20.0
# With the guard on, a load window starts this long after the enqueue: past the worker's start
# and the guard's first pace (the slowest, eased off over about 18 s when nothing is felt),
# so it measures the pace the guard settles at, not the gentle start.
GUARD_SETTLE_SECONDS = 25.0
QUICK_WINDOW_SECONDS = 5.0  # every load window of `--quick`: it checks the bench runs, it measures nothing
# (c) and (c') are the maintenance-window settings: no sleep and no foreground guard, so they
# measure the batches themselves; (d) is what `backfill enqueue NAME` does.
MAINTENANCE = ["--sleep", "0", "--max-latency-ratio", "0"]
WORKER_METHODS = (("worker_sleep0", [*MAINTENANCE, "--order", "key"], 0.0),
                  ("worker_physical", [*MAINTENANCE, "--order", "physical"], 0.0), ("worker_defaults", [], 0.1))
RESULTS = harness.REPO / "bench" / "results"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def settings_for(srv: harness.Servers, db: str) -> Settings:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    return Settings(database_url=with_database(srv.admin_url, db), redis_url=srv.redis_url,
                    broker_url=srv.redis_url, namespace=ns, queue=f"{ns}-q")


def on_copy(srv: harness.Servers, template: str, measure: Callable[[str, str], object]) -> object:
    """Run `measure(url, dbname)` on a fresh copy of `template`, then drop the copy. A
    Measurement gets the WAL written, the checkpoints taken and the autovacuum runs on the
    copy while it ran."""
    db = harness.clone(srv.admin_url, template)
    url = with_database(srv.admin_url, db)
    harness.checkpoint(url)
    try:
        before = harness.wal_counters(srv.admin_url)
        result = measure(url, db)
        after = harness.wal_counters(srv.admin_url)
        vacuums = harness.autovacuums(url)
        if isinstance(result, Measurement):
            result.autovacuums = vacuums
            if before and after:
                result.add_wal(after.since(before))
        elif isinstance(result, foreground.Latency):
            result = replace(result, autovacuums=vacuums)
        return result
    finally:
        drop_database(srv.admin_url, db)


def foreground_during(srv: harness.Servers, backfill: str, options: list[str], keys: int,
                      seconds: float, settle_seconds: float = 0.0) -> Callable[[str, str], foreground.Latency]:
    """The pgbench load for `seconds` alone on the copy, then again `settle_seconds` after the
    enqueue while a real worker runs the backfill on it. The window alone right before is the
    yardstick of that window: on a machine whose WAL flushes vary from minute to minute, a
    load measured alone once at the start is not."""
    def measure(url: str, db: str) -> foreground.Latency:
        alone = foreground.pgbench(url, keys, seconds)
        during = harness.load_during_run(settings_for(srv, db), backfill, options,
                                         lambda: foreground.pgbench(url, keys, seconds), settle_seconds)
        return replace(during, paired_alone_p99_ms=alone.p99_ms)
    return measure


def guard_on(options: list[str]) -> bool:
    """Whether a run with `options` has the foreground guard on."""
    return not any(a == "--max-latency-ratio" and b in ("0", "0.0") for a, b in zip(options, options[1:]))


def foreground_alone(srv: harness.Servers, template: str, keys: int, seconds: float) -> foreground.Latency:
    """The load with nothing else running, three times on fresh copies: the run with the
    median p99 (one quiet or noisy minute does not set the yardstick)."""
    runs: list[foreground.Latency] = [on_copy(srv, template, lambda url, db: foreground.pgbench(  # type: ignore[misc]
        url, keys, seconds)) for _ in range(3)]
    return sorted(runs, key=lambda r: r.p99_ms)[1]


@dataclass(frozen=True)
class Extras:
    """What one repetition measures besides (a), (c) and (d)."""

    foreground: bool  # (c) and (d) again, with the pgbench load alongside
    runbook: bool  # (b), capped at about twice (a)
    bare_loop: bool  # the batch statement alone, to price the framework per batch
    foreground_seconds: float = FOREGROUND_SECONDS  # the longest load window
    settle_seconds: float = GUARD_SETTLE_SECONDS  # with the guard on, the load starts this long after the enqueue
    methods: tuple[str, ...] = tuple(m for m, _, _ in WORKER_METHODS)  # the worker's methods to run


def one_repetition(srv: harness.Servers, template: str, backfill: str, keys: int, extras: Extras) -> dict[str, object]:
    """Every method once, each on its own copy, with nothing else running. The foreground
    runs last at most `extras.foreground_seconds`, inside the run's span."""
    out: dict[str, object] = {}
    plain: Measurement = on_copy(srv, template, lambda url, db: methods.plain_update(url, backfill))  # type: ignore[assignment]
    out["plain_update"] = plain
    log(f"  (a) plain UPDATE {plain.seconds:.1f}s")
    if backfill in methods.PLAIN_SUBQUERY:
        out["plain_update_subquery"] = on_copy(srv, template, lambda url, db: methods.plain_update(url, backfill, True))
        log(f"  (a') plain UPDATE with the definition's subquery {out['plain_update_subquery'].seconds:.1f}s")  # type: ignore[attr-defined]
    if extras.bare_loop:
        out["bare_keyset_loop"] = on_copy(srv, template, lambda url, db: methods.bare_loop(url, backfill))
        out["bare_block_loop"] = on_copy(srv, template, lambda url, db: methods.bare_loop(url, backfill, physical=True))
    for method, options, sleep in WORKER_METHODS:
        if method not in extras.methods or (method == "worker_physical" and methods.key_order_only(backfill)):
            continue
        result: Measurement = on_copy(srv, template, lambda url, db, o=options, m=method, s=sleep: methods.worker_run(
            settings_for(srv, db), backfill, o, m, s))  # type: ignore[assignment]
        out[method] = result
        log(f"  {method} {result.seconds:.1f}s ({plain.seconds / result.seconds:.2f}x of (a)), "
            f"batch p50/p99 {result.batch_p50 * 1000:.0f}/{result.batch_p99 * 1000:.0f} ms")  # type: ignore[operator]
        if extras.foreground:
            settle = min(extras.settle_seconds, result.seconds / 2) if guard_on(options) else 0.0
            window = min(extras.foreground_seconds, max(5.0, (result.seconds - settle) * 0.8))
            latency: foreground.Latency = on_copy(  # type: ignore[assignment]
                srv, template, foreground_during(srv, backfill, options, keys, window, settle))
            out[f"foreground_{method}"] = latency
            log(f"  {method} with the foreground load ({window:.0f} s, from {settle:.0f} s after the enqueue): "
                f"its p99 {latency.p99_ms:.1f} ms (alone right before: {latency.paired_alone_p99_ms:.1f} ms)")
    if not extras.runbook:
        return out
    cap = 2 * plain.seconds + 0.1 * plain.rows / 10_000 + 30
    out["runbook_loop"] = on_copy(srv, template, lambda url, db: methods.runbook_loop(url, backfill, cap))
    log(f"  (b) runbook loop {out['runbook_loop'].seconds:.1f}s ({out['runbook_loop'].outcome})")  # type: ignore[attr-defined]
    return out


def runbook_due(repetition: int, runbook_reps: int, outcomes: list[str]) -> bool:
    """The runbook's loop runs in the first `runbook_reps` repetitions, and in every later one
    while it finishes: a loop that stops at a bad row, or runs into its cap, does so again."""
    return repetition < runbook_reps or (bool(outcomes) and outcomes[-1] == "ok")


def scenario(srv: harness.Servers, template: str, backfill: str, rows: int, keys: int, reps: int,
             runbook_reps: int, bare_loop: bool, alone: foreground.Latency, plan: Extras,
             foreground_reps: int = 1) -> dict[str, object]:
    """`reps` repetitions (the runbook's loop as `runbook_due` says, the foreground load in
    the first `foreground_reps`, the bare loop in all or none; windows and methods as
    `plan` says), summarized per method."""
    runs: list[dict[str, object]] = []
    outcomes: list[str] = []
    for i in range(reps):
        extras = replace(plan, foreground=i < foreground_reps, runbook=runbook_due(i, runbook_reps, outcomes),
                         bare_loop=bare_loop)
        runs.append(one_repetition(srv, template, backfill, keys, extras))
        if "runbook_loop" in runs[-1]:
            outcomes.append(runs[-1]["runbook_loop"].outcome)  # type: ignore[attr-defined]
    names = [m for m in ("plain_update", "plain_update_subquery", "runbook_loop", "worker_sleep0", "worker_physical",
                         "worker_defaults", "bare_keyset_loop", "bare_block_loop") if any(m in r for r in runs)]
    latency = {m: [r[f"foreground_{m}"] for r in runs if f"foreground_{m}" in r]
               for m in ("worker_sleep0", "worker_physical", "worker_defaults")}
    return {
        "backfill": backfill, "rows": rows,
        "methods": {m: report.summarize([r[m] for r in runs if m in r]) for m in names},  # type: ignore[misc]
        "raw": {m: [vars(r[m]) for r in runs if m in r] for m in names},
        "foreground_ms": {"alone": vars(alone), **{m: [vars(x) for x in v] for m, v in latency.items()}},
    }


def partitions(srv: harness.Servers, template: str) -> dict[str, object]:
    """aois_status with 2 partitions on 2 worker processes against 1 on 1, in maintenance
    settings (no sleep, the guard off): what is measured is the parallel speed-up, not the
    guard's hold on two runs beside each other."""
    out = {}
    for label, parts, concurrency in (("one_worker", 1, 1), ("two_partitions_two_workers", 2, 2)):
        m = on_copy(srv, template, lambda url, db: methods.worker_run(
            settings_for(srv, db), "aois_status", [*MAINTENANCE, "--partitions", str(parts)], label,
            concurrency=concurrency))
        out[label] = vars(m)
        log(f"  partitions {label}: {m.seconds:.1f}s, {m.rows:,} rows")  # type: ignore[attr-defined]
    return out


def repetitions(text: str, sizes: int) -> list[int]:
    """`3` -> [3] * sizes; `3,1` -> [3, 1] (one per size); anything else is refused."""
    counts = [int(c) for c in text.split(",")]
    if len(counts) == 1:
        counts *= sizes
    if len(counts) != sizes or min(counts) < 1:
        raise SystemExit(f"--reps {text!r}: give one count >= 1, or one per size ({sizes})")
    return counts


def worker_methods(text: str) -> tuple[str, ...]:
    """`--methods`: names from WORKER_METHODS; anything else is refused."""
    known = [m for m, _, _ in WORKER_METHODS]
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in known]
    if unknown or not chosen:
        raise SystemExit(f"--methods {text!r}: choose from {', '.join(known)}")
    return chosen


def bare_loop_sizes(text: str, sizes: list[int]) -> set[int]:
    """`smallest`, `all`, `none`, or sizes from `sizes`; anything else is refused."""
    if text == "none":
        return set()
    if text == "smallest":
        return {min(sizes)}
    if text == "all":
        return set(sizes)
    chosen = {int(c) for c in text.split(",")}
    if not chosen <= set(sizes):
        raise SystemExit(f"--bare-loop-sizes {text!r}: not among --sizes {sizes}")
    return chosen


def heavy_load(srv: harness.Servers, template: str, backfill: str, keys: int, rows: int,
               seconds: float = heavy.WINDOW_SECONDS,
               settle_seconds: float = GUARD_SETTLE_SECONDS) -> dict[str, object]:
    """The heavy foreground load alone and beside a run with the guard on and off."""
    log(f"heavy load ({heavy.HEAVY_RATE:,} tx/s) beside {backfill} at {rows:,} rows")
    found = heavy.heavy_load(lambda measure: on_copy(srv, template, measure), lambda db: settings_for(srv, db),
                             backfill, keys, seconds, settle_seconds)
    for key in ("guard_on", "guard_off"):
        window = found[key]
        log(f"  {key}: load p99 {window['latency']['p99_ms']:.1f} ms (alone {found['alone']['p99_ms']:.1f}), "
            f"run {window['rows']:,} rows, throttled {window['throttle_seconds']}")
    return {**found, "rows": rows}


def write_heavy(out: Path, server: str, found: dict[str, object]) -> None:
    """The heavy-load results of one server, in their own file."""
    (out / report.heavy_name(server)).write_text(json.dumps(found, indent=2, default=str) + "\n")


def write_results(out: Path, results: dict[str, object], scenarios: list[dict[str, object]]) -> None:
    """The server's results file with the targets evaluated on what has been measured so far."""
    results = {**results, "scenarios": scenarios, "targets": targets.evaluate(scenarios)}
    path = out / report.results_name(str(results.get("server_profile", "embedded")))
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "1000000,5000000"))
    parser.add_argument("--reps", default=os.environ.get("BENCH_REPS", "3"),
                        help="repetitions: one count, or one per size (e.g. 3,1)")
    parser.add_argument("--runbook-reps", type=int, default=int(os.environ.get("BENCH_RUNBOOK_REPS", "1")),
                        help="repetitions that run the runbook's loop whatever it did before (default 1); "
                             "later ones run it while it finishes (it is capped at about 2x the plain UPDATE)")
    parser.add_argument("--bare-loop-sizes", default=os.environ.get("BENCH_BARE_LOOP_SIZES", "smallest"),
                        help="sizes at which the bare loops run: 'smallest' (default), 'all', 'none', or a list; "
                             "it prices the framework per batch, which does not grow with the table")
    parser.add_argument("--backfills", default=",".join(BACKFILLS))
    parser.add_argument("--methods", default=",".join(m for m, _, _ in WORKER_METHODS),
                        help="the worker's methods beside the plain UPDATE (default all: "
                             + ", ".join(m for m, _, _ in WORKER_METHODS) + ")")
    parser.add_argument("--foreground-reps", type=int, default=1,
                        help="repetitions that measure the foreground load beside each worker method (default 1)")
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 repetition: checks the bench runs")
    parser.add_argument("--out", default=str(RESULTS), help="where to write results (default bench/results)")
    parser.add_argument("--server", choices=harness.PROFILES, default=os.environ.get("BENCH_SERVER", "embedded"),
                        help="embedded (default): the packaged PostgreSQL, sized to hold the tables; production: "
                             "the binaries of --pg-bin, 256MB shared buffers, JIT on")
    parser.add_argument("--heavy-load", default=os.environ.get("BENCH_HEAVY_LOAD", "aois_status"),
                        help=f"backfill run beside a {heavy.HEAVY_RATE:,} tx/s load at the smallest size, guard on "
                             "and off (default aois_status; 'none' to skip)")
    parser.add_argument("--heavy-load-only", action="store_true",
                        help="measure only the heavy load (its own results file; the other results stay)")
    parser.add_argument("--pg-bin", default=os.environ.get("BACKFILL_PG_BIN"),
                        help="PostgreSQL server binaries for --server production (default BACKFILL_PG_BIN)")
    args = parser.parse_args()
    try:
        run(args)
    except harness.BenchSetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> None:
    """The benchmark as `args` ask, on servers of its own (stopped on exit)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped bench still stops its servers
    out = Path(args.out)
    sizes = [20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    reps_by_size = dict(zip(sizes, [1] if args.quick else repetitions(args.reps, len(sizes)), strict=True))
    bare_sizes = bare_loop_sizes(args.bare_loop_sizes, sizes)
    foreground_seconds = QUICK_WINDOW_SECONDS if args.quick else FOREGROUND_SECONDS
    heavy_seconds = QUICK_WINDOW_SECONDS if args.quick else heavy.WINDOW_SECONDS
    settle_seconds = 0.0 if args.quick else GUARD_SETTLE_SECONDS
    plan = Extras(foreground=True, runbook=False, bare_loop=False, foreground_seconds=foreground_seconds,
                  settle_seconds=settle_seconds, methods=worker_methods(args.methods))
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    scenarios: list[dict[str, object]] = []
    with harness.servers(sized=not args.quick, profile=args.server, pg_bin=args.pg_bin) as srv:
        results: dict[str, object] = {
            "server_profile": args.server,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "server": harness.server_settings(srv.admin_url)},
            "sizes": sizes, "repetitions": reps_by_size, "runbook_repetitions": args.runbook_reps,
            "bare_loop_sizes": sorted(bare_sizes), "methods": ["plain_update", *plan.methods],
            "foreground_repetitions": args.foreground_reps,
            "complete": False, "partitions": {},
        }
        for rows in sizes:
            reps = reps_by_size[rows]
            log(f"building a template with {rows:,} AOIs and {rows:,} jobs")
            copies = "ai_assistant_threads_copy" in args.backfills.split(",")
            template = harness.build_template(srv.admin_url, rows, rows, threads=rows if copies else 0)
            keys = foreground.prepare_keys(with_database(srv.admin_url, template))
            alone = foreground_alone(srv, template, keys, foreground_seconds)
            log(f"foreground alone: p50 {alone.p50_ms:.1f} ms, p99 {alone.p99_ms:.1f} ms (median of 3)")
            for backfill in [] if args.heavy_load_only else args.backfills.split(","):
                log(f"{backfill} at {rows:,} rows, {reps} repetition(s)")
                scenarios.append(scenario(srv, template, backfill, rows, keys, reps, args.runbook_reps,
                                          rows in bare_sizes, alone, plan, args.foreground_reps))
                results["minutes"] = round((time.time() - started) / 60, 1)
                write_results(out, results, scenarios)
            if rows == sizes[0] and args.heavy_load != "none":
                found = heavy_load(srv, template, args.heavy_load, keys, rows, heavy_seconds, settle_seconds)
                write_heavy(out, args.server, found)
            if rows == sizes[0] and not args.heavy_load_only:
                results["partitions"] = partitions(srv, template)
            drop_database(srv.admin_url, template)
    if args.heavy_load_only:
        return
    results |= {"complete": True, "minutes": round((time.time() - started) / 60, 1)}
    write_results(out, results, scenarios)
    report.plot(scenarios, out / report.plot_name(args.server))
    section = report.readme_section(out)
    if not args.quick:
        report.update_readme(harness.REPO / "README.md", section)
    print(section)
    log(f"done in {results['minutes']} minutes; results in {out}")


if __name__ == "__main__":
    main()
