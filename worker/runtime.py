"""The composition root: everything a process needs, built once from `Settings`.

`Runtime.from_settings(settings, profile)` is the only place that turns settings into an
engine, a Redis client, the registry of backfills, the Celery app and the `dispatch`
callable. Every part is built on first use (a command that needs only the database never
asks for `REDIS_URL`), then kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import redis as redis_lib
import sqlalchemy as sa
from celery import Celery

from backfills.control import RunControl
from backfills.engine import SliceRunner
from backfills.hooks import Hook, ShutdownFlag
from backfills.operations import Resources
from backfills.registry import Registry
from backfills.retry import RetryPolicy
from backfills.runs import RunStore
from core.connections import ConnectionProfile, open_engine, open_redis
from core.settings import Settings
from monitoring.hook import MetricsHook
from monitoring.recorder import MetricsRecorder

__all__ = ["CLI", "DEMO", "RECONCILER", "TASK_NAME", "WORKER", "Runtime", "celery_app", "exporter_profile"]

TASK_NAME = "backfill.run_part"

CLI = ConnectionProfile("backfill-cli", redis_socket_timeout=10, redis_connect_timeout=5)
WORKER = ConnectionProfile("backfill-worker", redis_socket_timeout=10, redis_health_check_interval=30)
# No idle connections: prefork children forked later by the worker's main process must
# not inherit open database sockets.
RECONCILER = ConnectionProfile("backfill-reconciler", pooled=False, redis_socket_timeout=10)
DEMO = ConnectionProfile()


def exporter_profile(timeout_ms: int, connect_timeout: int = 3) -> ConnectionProfile:
    """The exporter's connections: statements and Redis calls bounded by twice `timeout_ms`
    (its health readings set `timeout_ms` for themselves), so a scrape never hangs."""
    return ConnectionProfile("backfill-exporter", connect_timeout=connect_timeout,
                             statement_timeout_ms=2 * timeout_ms, redis_socket_timeout=2 * timeout_ms / 1000,
                             redis_connect_timeout=connect_timeout)


def celery_app(settings: Settings) -> Celery:
    """A Celery app whose broker keys live under the settings' namespace (no tasks yet)."""
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
    return app


class Runtime:
    """One process's connections, registry, Celery app and `dispatch`, each built once."""

    def __init__(self, settings: Settings, profile: ConnectionProfile = CLI, *, app: Celery | None = None,
                 engine: sa.Engine | None = None, redis: redis_lib.Redis | None = None,
                 registry: Registry | None = None) -> None:
        self.settings = settings
        self.profile = profile
        for name, given in (("app", app), ("engine", engine), ("redis", redis), ("registry", registry)):
            if given is not None:
                self.__dict__[name] = given  # takes the place of the cached property

    @classmethod
    def from_settings(cls, settings: Settings, profile: ConnectionProfile = CLI, *,
                      app: Celery | None = None) -> Runtime:
        """The runtime of a process of kind `profile`; `app` when the caller already has
        the Celery app (the worker, whose task is registered on it)."""
        return cls(settings, profile, app=app)

    @cached_property
    def engine(self) -> sa.Engine:
        """The target database."""
        return open_engine(self.settings, self.profile)

    @cached_property
    def redis(self) -> redis_lib.Redis:
        """The Redis that holds checkpoints, leases and counters."""
        return open_redis(self.settings, self.profile)

    @cached_property
    def registry(self) -> Registry:
        """Registered backfills (built-in and `BACKFILL_DEFINITIONS`)."""
        return Registry.discover(self.settings.extra_definitions)

    @cached_property
    def app(self) -> Celery:
        """The Celery app slices are sent through."""
        return celery_app(self.settings)

    @property
    def store(self) -> RunStore:
        """Run records."""
        return RunStore(self.engine)

    def control(self, run_id: str) -> RunControl:
        """Redis state of one run."""
        return RunControl(self.redis, self.settings.namespace, run_id)

    def dispatch(self, run_id: str, part: int, lease_token: str | None = None) -> None:
        """Queue one slice of `part` of `run_id` (handing on the part's lease, when held)."""
        self.app.send_task(TASK_NAME, args=[run_id, part, lease_token], queue=self.settings.queue)

    @cached_property
    def resources(self) -> Resources:
        """What `backfills.operations` needs to carry out a command."""
        return Resources(self.settings.namespace, self.engine, self.redis, self.registry, self.dispatch)

    def slice_runner(self, shutdown: ShutdownFlag | None = None, *, metrics: bool = True,
                     retry: RetryPolicy | None = None, extra_hooks: Sequence[Hook] = ()) -> SliceRunner:
        """A slice runner over this runtime's connections (with the metrics hook unless
        `metrics` is false; `retry` defaults to the settings' retry window)."""
        hooks = [*extra_hooks]
        if metrics:
            hooks.append(MetricsHook(MetricsRecorder(self.redis, self.settings.namespace)))
        return SliceRunner(self.engine, self.control, self.registry, lease_seconds=self.settings.lease_seconds,
                           slice_seconds=self.settings.slice_seconds,
                           retry=retry or RetryPolicy(window_seconds=self.settings.retry_window_seconds),
                           shutdown=shutdown, extra_hooks=hooks)

    def close(self) -> None:
        """Release the connections that were opened."""
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
