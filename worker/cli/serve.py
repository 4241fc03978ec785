"""`backfill worker`: a Celery worker with the right settings and the reconciler."""

from __future__ import annotations

import click
from celery.signals import worker_ready, worker_shutting_down

from worker.app import create_app
from worker.cli.common import CliState, command_errors, pass_state
from worker.reconciler import Reconciler
from worker.runtime import RECONCILER, Runtime

__all__ = ["COMMANDS"]


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="worker processes (each runs one run part at a time).")
@click.option("--queues", help="comma-separated queues [default: BACKFILL_QUEUE or 'backfills'].")
@click.option("--pool", type=click.Choice(["prefork", "solo", "threads"]), default="prefork", show_default=True)
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), help="recycle a child after this many slices.")
@click.option("--loglevel", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True)
@pass_state
@command_errors
def worker(state: CliState, concurrency: int, queues: str | None, pool: str, max_tasks_per_child: int | None,
           loglevel: str) -> None:
    """Start a worker. SIGTERM: the current batch finishes, the slice is re-queued, then it exits."""
    settings = state.settings
    settings.require_redis()
    settings.require_broker()
    state.check_database()  # refuse early, with one sentence, when the database is unreachable
    app, runtime = create_app(settings)
    reconciler = Reconciler(Runtime.from_settings(settings, RECONCILER, app=app))

    def on_ready(**_: object) -> None:
        reconciler.start()

    def on_shutdown(**_: object) -> None:
        runtime.shutdown.set()
        reconciler.stop()

    worker_ready.connect(on_ready, weak=False)
    worker_shutting_down.connect(on_shutdown, weak=False)
    argv = ["worker", f"--loglevel={loglevel.upper()}", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--queues={queues or settings.queue}", "--prefetch-multiplier=1", "-O", "fair",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if max_tasks_per_child:
        argv.append(f"--max-tasks-per-child={max_tasks_per_child}")
    app.worker_main(argv)


COMMANDS = [worker]
