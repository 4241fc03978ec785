"""One frozen settings object, built once at start-up from the environment.

Nothing here reads the environment at import time: callers build a `Settings` with
`Settings.from_env()` (or construct one directly in tests) and pass it down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

__all__ = ["ConfigError", "Settings", "redact"]

_PG_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


_TIMINGS: dict[str, tuple[str, float]] = {
    "lease_seconds": ("BACKFILL_LEASE_SECONDS", 60.0),
    "slice_seconds": ("BACKFILL_SLICE_SECONDS", 30.0),
    "reconcile_seconds": ("BACKFILL_RECONCILE_SECONDS", 15.0),
    "stale_seconds": ("BACKFILL_STALE_SECONDS", 60.0),
    "retry_window_seconds": ("BACKFILL_RETRY_WINDOW_SECONDS", 300.0),
}


class ConfigError(Exception):
    """A setting is missing or malformed; the command refuses to run (exit 2)."""


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def redact(url: str) -> str:
    """Return `url` with any password replaced by `***` (userinfo and `password=` forms)."""
    url = re.sub(r"(://[^:/@,?]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


@dataclass(frozen=True)
class Settings:
    """Where the tool's state lives. Built once; passed explicitly; never mutated."""

    database_url: str | None = None
    redis_url: str | None = None
    broker_url: str | None = None
    namespace: str = "backfill"
    queue: str = "backfills"
    extra_definitions: tuple[str, ...] = ()
    lease_seconds: float = 60.0
    slice_seconds: float = 30.0
    reconcile_seconds: float = 15.0
    stale_seconds: float = 60.0
    retry_window_seconds: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `DATABASE_URL`, `REDIS_URL`, `CELERY_BROKER_URL` (+ namespace/queue)."""
        env = os.environ if environ is None else environ
        redis_url = env.get("REDIS_URL") or None
        settings = cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=redis_url,
            broker_url=env.get("CELERY_BROKER_URL") or redis_url,
            namespace=env.get("BACKFILL_NAMESPACE") or "backfill",
            queue=env.get("BACKFILL_QUEUE") or "backfills",
            extra_definitions=tuple(
                m.strip() for m in (env.get("BACKFILL_DEFINITIONS") or "").split(",") if m.strip()
            ),
            **{field: _seconds(env, var, default) for field, (var, default) in _TIMINGS.items()},
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject malformed URLs with a readable message (missing ones are checked on use)."""
        if self.database_url and not self.database_url.startswith(_PG_SCHEMES):
            raise ConfigError(
                f"DATABASE_URL must start with postgresql:// or postgresql+psycopg://, "
                f"got {redact(self.database_url)!r}"
            )
        for name, url in (("REDIS_URL", self.redis_url), ("CELERY_BROKER_URL", self.broker_url)):
            if url and not url.startswith(_REDIS_SCHEMES):
                raise ConfigError(f"{name} must start with redis:// or rediss://, got {redact(url)!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", self.namespace):
            raise ConfigError(f"BACKFILL_NAMESPACE may hold letters, digits and _.:- only, got {self.namespace!r}")

    def require_database(self) -> str:
        """The database URL, or a `ConfigError` naming the variable to set."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set; point it at the target PostgreSQL database")
        return self.database_url

    def require_redis(self) -> str:
        """The Redis URL, or a `ConfigError` naming the variable to set."""
        if not self.redis_url:
            raise ConfigError("REDIS_URL is not set; point it at the Redis that holds checkpoints")
        return self.redis_url

    def require_broker(self) -> str:
        """The Celery broker URL (defaults to `REDIS_URL`)."""
        if not self.broker_url:
            raise ConfigError("CELERY_BROKER_URL and REDIS_URL are both unset; the worker needs a broker")
        return self.broker_url

    def with_urls(self, database_url: str, redis_url: str) -> Settings:
        """A copy pointing at other servers (used by the demo and tests)."""
        return replace(self, database_url=database_url, redis_url=redis_url, broker_url=redis_url)
