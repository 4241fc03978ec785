"""What every command shares: exit codes, error reporting, lazily built resources."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import redis as redis_lib
import sqlalchemy as sa

from backfills.definition import DefinitionError
from backfills.operations import BadInput, Resources
from backfills.registry import Registry, UnknownBackfill
from backfills.runs import ActiveRunExists, RunNotFound
from backfills.states import InvalidTransition
from core.db import DatabaseUnavailable, ping
from core.errors import first_line
from core.settings import ConfigError, Settings, redact
from migrations.executor import MigrationFailed
from migrations.files import MigrationError
from worker.embedded import EmbeddedServerError
from worker.runtime import Runtime

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_BAD_INPUT", "EXIT_ROW_ERRORS", "EXIT_TIMEOUT",
           "CliState", "command_errors", "echo_json", "fail", "pass_state"]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_ROW_ERRORS, EXIT_TIMEOUT = 0, 1, 2, 3, 124

_BAD_INPUT = (ConfigError, BadInput, UnknownBackfill, RunNotFound, ActiveRunExists, InvalidTransition,
              DefinitionError, EmbeddedServerError, ValueError)
_RUNTIME = (DatabaseUnavailable, MigrationFailed, sa.exc.OperationalError, redis_lib.ConnectionError,
            redis_lib.TimeoutError)

F = TypeVar("F", bound=Callable[..., Any])


class Exit(Exception):
    """End the command with `code` after printing `message` (if any) on stderr."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fail(code: int, message: str) -> Exit:
    """An `Exit` to raise."""
    return Exit(code, message)


def _sentence(exc: BaseException) -> str:
    return redact(first_line(exc))


def _code_for(exc: BaseException) -> int:
    if isinstance(exc, _RUNTIME):
        return EXIT_FAILURE
    if isinstance(exc, (MigrationError, *_BAD_INPUT)):
        return EXIT_BAD_INPUT
    return EXIT_FAILURE


def command_errors(fn: F) -> F:
    """Turn known failures into one readable sentence on stderr and the SPEC exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exit as exc:
            if exc.message:
                click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # output piped into `head` and the like: stop quietly
            sys.stderr.close()
            sys.exit(EXIT_OK)
        except Exception as exc:  # every other failure: one sentence, no traceback
            if os.environ.get("BACKFILL_DEBUG"):
                traceback.print_exc()
            click.echo(f"error: {_sentence(exc)}", err=True)
            sys.exit(_code_for(exc))

    return wrapper  # type: ignore[return-value]


def echo_json(data: object) -> None:
    """Print `data` as JSON (datetimes as ISO strings)."""
    click.echo(json.dumps(data, indent=2, default=str))


@dataclass
class CliState:
    """Settings, read once per invocation, and the runtime whose parts are built on first use."""

    settings: Settings
    _runtime: Runtime | None = None
    _pinged: bool = False
    _redis_checked: bool = False

    @property
    def runtime(self) -> Runtime:
        """The command's runtime (nothing is connected until a part is asked for)."""
        if self._runtime is None:
            self._runtime = Runtime.from_settings(self.settings)
        return self._runtime

    @property
    def registry(self) -> Registry:
        """Registered backfills."""
        return self.runtime.registry

    @property
    def engine(self) -> sa.Engine:
        """The target database (checked reachable)."""
        engine = self.runtime.engine
        if not self._pinged:
            ping(engine, self.settings.require_database())
            self._pinged = True
        return engine

    def check_database(self) -> None:
        """Fail now (exit 1, one sentence) if the database cannot be reached."""
        _ = self.engine

    @property
    def resources(self) -> Resources:
        """Database, Redis, registry and Celery app (checked reachable)."""
        if not self._redis_checked:
            url = self.settings.require_redis()
            try:
                self.runtime.redis.ping()
            except redis_lib.RedisError as exc:
                raise Exit(EXIT_FAILURE, f"cannot connect to Redis at {redact(url)}: {_sentence(exc)}") from None
            self._redis_checked = True
        self.settings.require_broker()
        _ = self.engine
        return self.runtime.resources


pass_state = click.make_pass_decorator(CliState)
