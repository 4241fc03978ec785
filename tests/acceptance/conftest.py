"""Servers an acceptance test owns (so it may restart or flush them) and workers pointed at them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backfills.operations import RegistryGate
from backfills.registry import Registry
from core.db import create_db_engine
from core.settings import Settings
from migrations.executor import MigrationRunner
from migrations.files import load_migrations
from tests.support.servers import create_database
from tests.support.workers import WorkerProcess
from worker.embedded import EmbeddedPostgres, EmbeddedRedis, scratch_dir


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL server of this test's own, with a database at schema 016: (server, url)."""
    server = EmbeddedPostgres(scratch_dir("backfill-own-") / "pg")
    try:
        server.start()
        url = create_database(server.url(), "app")
        engine = create_db_engine(url, pooled=False)
        try:
            MigrationRunner(engine, load_migrations(), gate=RegistryGate(engine, Registry.discover()), log=lambda _: None).up("016")
        finally:
            engine.dispose()
        yield server, url
    finally:
        server.destroy()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own (it may be flushed)."""
    directory = scratch_dir("backfill-own-redis-")
    server = EmbeddedRedis(directory).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def workers_for(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Like `workers`, for any settings: `workers_for(settings, concurrency=1, **env)`."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, concurrency: int = 1, **env: str) -> WorkerProcess:
        proc = WorkerProcess(settings, tmp_path / f"own-worker-{len(started)}.log", concurrency, env)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
