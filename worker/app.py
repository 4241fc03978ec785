"""The Celery application, built from one `Settings` (no work at import time)."""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass, field

import redis as redis_lib
import sqlalchemy as sa
from celery import Celery, Task

from backfills.control import RunControl
from backfills.engine import SliceOutcome, SliceRunner
from backfills.registry import Registry
from backfills.retry import RetryPolicy
from core.errors import first_line
from monitoring.hook import MetricsHook
from monitoring.recorder import MetricsRecorder
from core.db import create_db_engine
from core.settings import Settings

__all__ = ["TASK_NAME", "WorkerRuntime", "create_app", "dispatch"]

TASK_NAME = "backfill.run_part"
log = logging.getLogger("backfill.worker")


@dataclass
class WorkerRuntime:
    """Per-process resources (engine, Redis, runner), created lazily after fork."""

    settings: Settings
    shutdown: object = field(default_factory=multiprocessing.Event)
    _pid: int | None = None
    _runner: SliceRunner | None = None
    _engine: sa.Engine | None = None
    _redis: redis_lib.Redis | None = None

    def _ensure(self) -> None:
        if self._pid == os.getpid():
            return
        self._engine = create_db_engine(self.settings.require_database(), application_name="backfill-worker")
        self._redis = redis_lib.Redis.from_url(self.settings.require_redis(), socket_timeout=10,
                                               health_check_interval=30)
        registry = Registry.discover(self.settings.extra_definitions)
        redis_client = self._redis
        self._runner = SliceRunner(
            self._engine, lambda run_id: RunControl(redis_client, self.settings.namespace, run_id), registry,
            lease_seconds=self.settings.lease_seconds, slice_seconds=self.settings.slice_seconds,
            retry=RetryPolicy(window_seconds=self.settings.retry_window_seconds),
            shutdown=self.shutdown,  # type: ignore[arg-type]
            extra_hooks=[MetricsHook(MetricsRecorder(redis_client, self.settings.namespace))],
        )
        self._pid = os.getpid()

    def runner(self) -> SliceRunner:
        """This process's slice runner."""
        self._ensure()
        assert self._runner is not None
        return self._runner


def create_app(settings: Settings) -> tuple[Celery, WorkerRuntime]:
    """A Celery app whose broker keys live under the settings' namespace, and its runtime."""
    app = Celery("backfill", broker=settings.require_broker(), set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600, "global_keyprefix": f"{settings.namespace}:celery:"},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    runtime = WorkerRuntime(settings)
    _register_tasks(app, runtime)
    return app, runtime


def _register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=150)
    def run_part(task: Task, run_id: str, part: int, lease_token: str | None = None) -> str:
        try:
            outcome, token = runtime.runner().run_slice_continuing(run_id, part, lease_token)
        except sa.exc.OperationalError as exc:
            log.warning("run %s part %s: database unavailable (%s); retrying", run_id, part,
                        first_line(exc))
            raise task.retry(countdown=2) from None
        log.info("run %s part %s: slice %s", run_id, part, outcome.value)
        if outcome is SliceOutcome.CONTINUE:
            dispatch(app, runtime.settings, run_id, part, token)
        return outcome.value


def dispatch(app: Celery, settings: Settings, run_id: str, part: int, lease_token: str | None = None) -> None:
    """Queue one slice of `part` of `run_id` (handing on the part's lease, when held)."""
    app.send_task(TASK_NAME, args=[run_id, part, lease_token], queue=settings.queue)

