"""Session-wide real servers and per-test isolation.

- `pg_admin_url`: the session's PostgreSQL (embedded unless DATABASE_URL is set).
- Template databases are built once per session by the real migration runner:
  `tpl_empty` (nothing) and `tpl_expanded` (tool schema + application migrations to 016,
  i.e. ready for the four backfills). Each test clones one in milliseconds.
- `redis_url` + `namespace`: a real Redis and a key namespace of the test's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
import sqlalchemy as sa

from backfills.operations import RegistryGate
from backfills.registry import Registry
from core.db import create_db_engine
from core.settings import Settings
from migrations.executor import MigrationRunner
from migrations.files import load_migrations
from tests.support import servers


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def pg_admin_url(session_tmp: Path) -> Iterator[str]:
    with servers.postgres_server(session_tmp) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(session_tmp: Path) -> Iterator[str]:
    with servers.redis_server(session_tmp) as url:
        yield url


def _build_template(admin_url: str, name: str, target: str | None) -> str:
    servers.drop_database(admin_url, name)
    url = servers.create_database(admin_url, name)
    if target is not None:
        engine = create_db_engine(url, pooled=False)
        MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()), log=lambda _: None).up(target)
        engine.dispose()
    return name


@pytest.fixture(scope="session")
def templates(pg_admin_url: str) -> Iterator[dict[str, str]]:
    names = {
        "empty": _build_template(pg_admin_url, servers.unique_name("tpl_empty"), None),
        "expanded": _build_template(pg_admin_url, servers.unique_name("tpl_expanded"), "016"),
    }
    yield names
    for name in names.values():
        servers.drop_database(pg_admin_url, name)


def _clone(pg_admin_url: str, template: str) -> Iterator[str]:
    name = servers.unique_name("t")
    url = servers.create_database(pg_admin_url, name, template=template)
    yield url
    servers.drop_database(pg_admin_url, name)


@pytest.fixture
def empty_db_url(pg_admin_url: str, templates: dict[str, str]) -> Iterator[str]:
    """A fresh, empty database of this test's own."""
    yield from _clone(pg_admin_url, templates["empty"])


@pytest.fixture
def db_url(pg_admin_url: str, templates: dict[str, str]) -> Iterator[str]:
    """A database of this test's own at the expanded schema (ready for backfills)."""
    yield from _clone(pg_admin_url, templates["expanded"])


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_db_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def namespace() -> str:
    return servers.unique_name("bftest")


@pytest.fixture
def redis_client(redis_url: str, namespace: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def settings(db_url: str, redis_url: str, namespace: str) -> Settings:
    return Settings(database_url=db_url, redis_url=redis_url, broker_url=redis_url,
                    namespace=namespace, queue=f"{namespace}-q")


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Start real `backfill worker` processes: `workers(concurrency=1, **env)`; all stopped at the end."""
    from tests.support.workers import WorkerProcess

    started: list[WorkerProcess] = []

    def start(concurrency: int = 1, args: tuple[str, ...] = (), **env: str) -> WorkerProcess:
        proc = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", concurrency, env, args)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def worker_role(db_url: str, pg_admin_url: str) -> Iterator[str]:
    """A non-superuser role with exactly the grants of docs/worker-role.sql on this test's database."""
    import psycopg

    role = servers.unique_name("bfrole")
    grants = (Path(__file__).resolve().parents[1] / "docs" / "worker-role.sql").read_text()
    grants = grants.replace("backfill_worker", role).replace("PASSWORD 'change-me'", "PASSWORD 'pw'")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(grants)
    yield role
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'REASSIGN OWNED BY "{role}" TO postgres')
        conn.execute(f'DROP OWNED BY "{role}"')
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def role_url(db_url: str, role: str) -> str:
    """`db_url` connecting as `role` (password 'pw')."""
    return db_url.replace("postgresql://postgres@", f"postgresql://{role}:pw@", 1)
