"""The quickstart: real servers, the runbook's table rename done by a copy backfill while
the application writes, sample data with bad rows, a real worker process, the four column
backfills with live progress, the contract migrations gated on them, a summary.
Everything it starts, it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from backfills import operations as ops
from backfills.runs import RunOptions
from backfills.states import TERMINAL, RunState
from core.settings import Settings, redact
from migrations.executor import BackfillRequired, MigrationRunner
from migrations.files import load_migrations
from migrations.planner import status_rows
from worker import sample_data
from worker.cli.progress import watch
from worker.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, scratch_dir
from worker.runtime import DEMO, Runtime

__all__ = ["Demo", "DemoOptions"]


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs on and how big it is."""

    rows: int = 100_000
    database_url: str | None = None
    redis_url: str | None = None
    workdir: Path = Path(".demo")
    keep: bool = False


class Demo:
    """One demo session."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.console = Console() if sys.stdout.isatty() else Console(width=120)
        self.say = self.console.print

    def run(self) -> None:
        """Run the whole quickstart; stop every process it started."""
        started = time.monotonic()
        with ExitStack() as stack:
            settings = self._servers(stack)
            runtime = Runtime.from_settings(settings, DEMO)
            stack.callback(runtime.close)
            engine, registry = runtime.engine, runtime.registry
            runner = MigrationRunner(engine, load_migrations(), gate=ops.RegistryGate(engine, registry),
                                     log=lambda line: self.say(f"  [dim]{line}[/dim]"))
            threads = max(100, self.options.rows // 10)
            self._step(f"1. Expand: migrate up to 002 (the new table ai_assistant_threads, DDL only); "
                       f"{threads:,} old threads in copilot_threads")
            runner.up("002")
            sample_data.load_threads(engine, threads)
            res = runtime.resources
            self._step("2. A real worker process (backfill worker --concurrency 2) and the metrics exporter")
            self._start(stack, settings, "worker", ["worker", "--concurrency", "2"])
            port = free_port()
            self._start(stack, settings, "exporter", ["exporter", "--port", str(port)])
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            self.say(f"  metrics: {metrics_url}")
            runs = [self._rename(res, runner, engine)]
            self._step(f"4. Sample data: {self.options.rows:,} AOIs and {self.options.rows // 2:,} jobs, with bad rows")
            sample_data.load(engine, sample_data.SampleSpec(aois=self.options.rows, jobs=self.options.rows // 2))
            columns = [d for d in registry if d.into is None]
            for definition in columns:
                self.say(f"  {definition.name:<22} {ops.count_remaining(engine, definition):>9,} rows to do")
            self._step(f"5. The {len(columns)} column backfills, enqueued at once; live progress")
            runs += [ops.enqueue(res, d.name, RunOptions()).id for d in columns]
            watch(res, runs[1:], interval=0.5, console=self.console)
            self._summary(res, runs)
            self._contract(res, runner, runs, engine)
            self._step("8. migrate status")
            for row in status_rows(runner.files, runner.applied()):
                mark = "[green]applied[/green]" if row["applied"] else "[yellow]pending[/yellow]"
                self.say(f"  {row['version']} {mark} {row['name']}")
            self.say(f"\n  metrics of this demo: {metrics_url}")
            if self.options.keep:
                self._keep_running(metrics_url)
        self.say(f"\n[bold]demo finished in {time.monotonic() - started:.0f}s[/bold]; every process it started is stopped.")

    # -- steps -----------------------------------------------------------------------
    def _step(self, title: str) -> None:
        self.say(f"\n[bold cyan]{title}[/bold cyan]")

    def _servers(self, stack: ExitStack) -> Settings:
        workdir = self.options.workdir.resolve()
        database_url = self.options.database_url or os.environ.get("DATABASE_URL")
        redis_url = self.options.redis_url or os.environ.get("REDIS_URL")
        self._step("0. Servers")
        if not database_url:
            pg = EmbeddedPostgres(scratch_dir("backfill-demo-") / "pg")
            stack.callback(pg.destroy)
            pg.start()
            database_url = pg.url()
            self.say(f"  embedded PostgreSQL (pid {pg.pid()}) at {database_url}")
        else:
            self.say(f"  PostgreSQL at {redact(database_url)}")
        database_url = self._demo_database(stack, database_url)
        if not redis_url:
            rd = EmbeddedRedis(workdir / "redis")
            rd.start()
            stack.callback(rd.stop)
            redis_url = rd.url
            self.say(f"  embedded Redis (pid {rd.pid()}) at {redis_url}")
        else:
            self.say(f"  Redis at {redact(redis_url)}")
        namespace = f"demo-{uuid.uuid4().hex[:8]}"
        return Settings(database_url=database_url, redis_url=redis_url, broker_url=redis_url,
                        namespace=namespace, queue=f"{namespace}-q")

    def _demo_database(self, stack: ExitStack, server_url: str) -> str:
        """A fresh database of the demo's own on that server, dropped at the end."""
        from core.databases import scratch_database
        return stack.enter_context(scratch_database(server_url, "backfill_demo"))

    def _start(self, stack: ExitStack, settings: Settings, name: str, args: list[str]) -> None:
        """A `backfill` subprocess in its own process group, logging to the workdir;
        stopped (SIGTERM, then SIGKILL) when the demo ends."""
        log_path = self.options.workdir.resolve() / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DATABASE_URL": settings.require_database(),
               "REDIS_URL": settings.require_redis(), "BACKFILL_NAMESPACE": settings.namespace,
               "BACKFILL_QUEUE": settings.queue}
        env.pop("CELERY_BROKER_URL", None)
        log = open(log_path, "w")  # noqa: SIM115 (closed by the stop callback)
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

        def stop() -> None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            log.close()

        stack.callback(stop)
        self.say(f"  {name} pid {proc.pid}, log in {log_path}")

    def _keep_running(self, metrics_url: str) -> None:
        """--keep: leave everything up for Prometheus and Grafana until Ctrl-C."""
        self._step("Everything is still running (--keep)")
        self.say(f"  metrics: {metrics_url}\n  point Prometheus at it (monitoring/prometheus/prometheus.yml);"
                 f" press Ctrl-C to stop everything")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            self.say("  stopping")

    def _summary(self, res: ops.Resources, runs: list[str]) -> None:
        self._step("6. Summary")
        table = Table()
        for column in ("backfill", "state", "rows changed", "row errors", "batches", "seconds", "rows/s"):
            table.add_column(column)
        for run_id in runs:
            run = res.store.get(run_id)
            seconds = ((run.finished_at or run.updated_at) - (run.started_at or run.created_at)).total_seconds()
            rate = run.rows_processed / seconds if seconds > 0 else 0
            table.add_row(run.backfill, run.state, f"{run.rows_processed:,}", f"{run.row_errors:,}",
                          f"{run.batches:,}", f"{seconds:.1f}", f"{rate:,.0f}")
        self.console.print(table)

    def _rename(self, res: ops.Resources, runner: MigrationRunner, engine: sa.Engine) -> str:
        """The runbook's rename: the drop refused while threads are missing, the copy while
        the application writes both tables, the drop applied once the copy verifies."""
        self._step("3. The rename copilot_threads -> ai_assistant_threads (runbook steps 2-5)")
        try:
            runner.up("016")
        except BackfillRequired as exc:
            self.say(f"  [red]refused:[/red] {exc}")
        writer = sample_data.ThreadWriter(engine).start()
        self.say("  the application now writes every new thread to both tables (step 2)")
        run = ops.enqueue(res, "ai_assistant_threads_copy", RunOptions()).id
        watch(res, [run], interval=0.5, console=self.console)
        self.say("")
        written = writer.stop()
        self.say(f"  the application wrote {written:,} threads to both tables meanwhile; "
                 f"reads and writes now use ai_assistant_threads alone (step 4)")
        remaining = ops.count_remaining(engine, res.registry.get("ai_assistant_threads_copy"))
        self.say(f"  backfill verify ai_assistant_threads_copy: {remaining}")
        runner.up("016")
        return run

    def _contract(self, res: ops.Resources, runner: MigrationRunner, runs: list[str], engine: sa.Engine) -> None:
        self._step("7. Contract: migrate up (017-019 wait on their backfills)")
        try:
            runner.up()
        except BackfillRequired as exc:
            self.say(f"  [red]refused:[/red] {exc}")
        failed = [res.store.get(r) for r in runs if res.store.get(r).row_errors]
        for run in failed:
            self.say(f"  backfill errors {run.id} ({run.backfill}):")
            for err in res.store.row_errors(run.id, limit=4):
                self.say(f"    {err.key[0]}  {err.error}")
        fixed = sample_data.fix_bad_rows(engine)
        self.say(f"  the data is fixed by hand (demo only): {fixed['aois']} AOIs, {fixed['jobs']} jobs")
        retries = [ops.retry_errors(res, run.id).id for run in failed]
        self.say(f"  backfill retry-errors: {len(retries)} new run(s) over just the failed rows")
        watch(res, retries, interval=0.5, console=self.console)
        self.say("")
        while any(res.store.get(r).state not in TERMINAL for r in retries):
            time.sleep(0.2)
        for retry in (res.store.get(r) for r in retries):
            if retry.rows_processed == 0 and retry.state == RunState.SUCCEEDED:
                self.say(f"  {retry.backfill}: the repaired rows no longer needed it (the UPDATE that repaired "
                         f"them fired the expand migration's sync trigger)")
        runner.up()

