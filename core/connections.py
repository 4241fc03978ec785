"""The one place that opens PostgreSQL and Redis from `Settings`.

Each process kind (CLI, worker, reconciler, exporter, demo) asks for its connections with
a `ConnectionProfile`: the application name shown in `pg_stat_activity`, whether idle
connections are pooled, and the timeouts it can afford.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis as redis_lib
import sqlalchemy as sa

from core.db import create_db_engine
from core.settings import Settings

__all__ = ["ConnectionProfile", "open_engine", "open_redis"]


@dataclass(frozen=True)
class ConnectionProfile:
    """How one kind of process connects (`None`: the client library's default)."""

    application_name: str = "backfill"
    pooled: bool = True
    connect_timeout: int = 5
    statement_timeout_ms: int | None = None
    redis_socket_timeout: float | None = None
    redis_connect_timeout: float | None = None
    redis_health_check_interval: int = 0


def open_engine(settings: Settings, profile: ConnectionProfile) -> sa.Engine:
    """An engine on `DATABASE_URL` (a `ConfigError` when it is unset); nothing connects yet."""
    return create_db_engine(settings.require_database(), application_name=profile.application_name,
                            pooled=profile.pooled, connect_timeout=profile.connect_timeout,
                            statement_timeout_ms=profile.statement_timeout_ms)


def open_redis(settings: Settings, profile: ConnectionProfile) -> redis_lib.Redis:
    """A client of `REDIS_URL` (a `ConfigError` when it is unset); nothing connects yet."""
    return redis_lib.Redis.from_url(settings.require_redis(), socket_timeout=profile.redis_socket_timeout,
                                    socket_connect_timeout=profile.redis_connect_timeout,
                                    health_check_interval=profile.redis_health_check_interval)
