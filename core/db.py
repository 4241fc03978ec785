"""Database connections: SQLAlchemy Core engines over psycopg 3.

Connections are made by psycopg from the libpq URL as given, so multi-host URLs with
`target_session_attrs=read-write` work and follow a promoted standby after failover.
Every connection of ours starts with `app.is_system_admin = true`: a session of this
tool is never silently filtered by row-level security. Tenant-scoped batches narrow it
with `SET LOCAL` inside their own transaction.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa
from sqlalchemy.pool import NullPool, QueuePool

from core.errors import first_line
from core.settings import redact

__all__ = ["DatabaseUnavailable", "create_db_engine", "libpq_url", "ping", "with_database"]

SYSTEM_ADMIN_OPTIONS = "-c app.is_system_admin=true"


class DatabaseUnavailable(Exception):
    """The database cannot be reached (runtime failure, exit 1)."""


def libpq_url(url: str) -> str:
    """Turn a SQLAlchemy-style URL into a libpq one (drops the `+psycopg` driver part)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def with_database(url: str, dbname: str) -> str:
    """`url` (a URL or a key=value conninfo) pointed at database `dbname` on the same
    server, as a `postgresql://` URL (what `DATABASE_URL` and the CLI take). Everything
    else is kept: every host of a multi-host URL and every parameter (`sslmode`,
    `target_session_attrs`, ...)."""
    conninfo = libpq_url(url)
    if conninfo.startswith("postgresql://"):
        parts = urlsplit(conninfo)
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))
    info = {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(conninfo).items() if v is not None}
    user, password = quote(info.pop("user", "postgres"), safe=""), info.pop("password", None)
    info.pop("dbname", None)
    netloc = _host_ports(info)
    secret = f":{quote(password, safe='')}" if password else ""
    query = f"?{urlencode(info)}" if info else ""
    return f"postgresql://{user}{secret}@{netloc}/{quote(dbname, safe='')}{query}"


def _host_ports(info: dict[str, str]) -> str:
    """The URL's `host:port,...` part, taken out of `info`; empty when a host is a socket
    directory, which a URL can only carry as a parameter (left in `info`)."""
    if any(h.startswith("/") for h in info.get("host", "").split(",")):
        return ""
    hosts, ports = info.pop("host", "127.0.0.1").split(","), info.pop("port", "5432").split(",")
    return ",".join(f"{h}:{ports[i] if len(ports) > 1 else ports[0]}" for i, h in enumerate(hosts))


def create_db_engine(
    url: str,
    *,
    application_name: str = "backfill",
    pooled: bool = True,
    connect_timeout: int = 5,
    statement_timeout_ms: int | None = None,
) -> sa.Engine:
    """An engine whose connections are made by psycopg from `url` (multi-host aware);
    `statement_timeout_ms` gives every session that `statement_timeout`."""
    conninfo = libpq_url(url)
    options = SYSTEM_ADMIN_OPTIONS
    if statement_timeout_ms is not None:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"

    def connect() -> psycopg.Connection:
        return psycopg.connect(
            conninfo,
            application_name=application_name,
            connect_timeout=connect_timeout,
            options=options,
        )

    pool_args: dict[str, object] = (
        {"poolclass": QueuePool, "pool_size": 2, "max_overflow": 4, "pool_pre_ping": True}
        if pooled
        else {"poolclass": NullPool}
    )
    return sa.create_engine("postgresql+psycopg://", creator=connect, **pool_args)


def ping(engine: sa.Engine, url: str) -> None:
    """Fail with `DatabaseUnavailable` (password redacted) when the database is unreachable."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        reason = first_line(exc.orig) if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot connect to the database at {redact(url)}: {reason}") from None
