"""One backfill through the real worker (`--sleep 0`) against one plain UPDATE, on
identical copies of the same table, in the same run: the ratio of their rows/s.

    python -m bench.ratio [--rows 1000000] [--backfill aois_status]
"""

from __future__ import annotations

import argparse
import time
import uuid

from backfills.registry import Registry
from bench import harness
from migrations.executor import MigrationRunner
from migrations.files import load_migrations
from worker import sample_data
from worker.db import create_db_engine
from worker.settings import Settings

PLAIN = {
    "aois_status": "UPDATE aois SET status = 'ACTIVE' WHERE status IS NULL",
    "aois_area_ha_numeric": "UPDATE aois SET area_ha_new = round(area_ha::numeric, 2) "
                            "WHERE area_ha_new IS NULL AND area_ha IS NOT NULL "
                            "AND area_ha NOT IN ('NaN', 'Infinity', '-Infinity') AND abs(area_ha) < 99999999.995",
    "jobs_tenant_id": "UPDATE jobs j SET tenant_id = a.tenant_id FROM aois a "
                      "WHERE a.id = j.aoi_id AND j.tenant_id IS NULL",
}


def build_template(admin_url: str, rows: int, jobs: int) -> str:
    """A database at schema 016 with `rows` AOIs (and `jobs` jobs) of sample data."""
    name = f"bench_tpl_{uuid.uuid4().hex[:6]}"
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = create_db_engine(harness.database_url(admin_url, name), pooled=False)
    MigrationRunner(engine, load_migrations(), log=lambda _: None).up("016")
    sample_data.load(engine, sample_data.SampleSpec(aois=rows, jobs=jobs))
    engine.dispose()
    harness.checkpoint(harness.database_url(admin_url, name))
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backfill", default="aois_status", choices=sorted(PLAIN))
    args = parser.parse_args()
    Registry.discover().get(args.backfill)
    with harness.servers() as srv:
        started = time.perf_counter()
        template = build_template(srv.admin_url, args.rows, args.rows if args.backfill.startswith("jobs") else 1000)
        print(f"template with {args.rows:,} rows built in {time.perf_counter() - started:.0f}s")
        plain_db = harness.clone(srv.admin_url, template)
        worker_db = harness.clone(srv.admin_url, template)
        plain_seconds = harness.timed_sql(harness.database_url(srv.admin_url, plain_db), PLAIN[args.backfill])
        print(f"plain UPDATE: {plain_seconds:.2f}s")
        harness.checkpoint(harness.database_url(srv.admin_url, worker_db))
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        settings = Settings(database_url=harness.database_url(srv.admin_url, worker_db), redis_url=srv.redis_url,
                            broker_url=srv.redis_url, namespace=ns, queue=f"{ns}-q")
        result = harness.run_worker(settings, args.backfill, ["--sleep", "0"])
        ratio = plain_seconds / result.engine_seconds
        data = {
            "backfill": args.backfill, "rows": args.rows, "plain_update_seconds": round(plain_seconds, 3),
            "worker_run_seconds": round(result.engine_seconds, 3),
            "worker_wall_seconds_incl_enqueue_and_wait": round(result.wall_seconds, 3),
            "rows_changed": result.rows, "batches": result.batches,
            "throughput_ratio_worker_vs_plain": round(ratio, 3),
            "batch_p50_ms": round(result.batch_p50 * 1000, 1), "batch_p99_ms": round(result.batch_p99 * 1000, 1),
            "worker_peak_rss_mb": round(result.peak_rss_mb, 1),
        }
        path = harness.write_result(f"ratio_{args.backfill}_{args.rows}", data)
        for key, value in data.items():
            print(f"{key:>45}: {value}")
        print(f"written to {path}")
        for db in (plain_db, worker_db, template):
            harness.drop(srv.admin_url, db)


if __name__ == "__main__":
    main()
