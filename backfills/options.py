"""Run options: how a run goes (batch size, pacing, safety limits), validated with
messages that name the command-line option."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_BATCH_SIZE", "MAX_PARTITIONS", "ORDERS", "ONLINE_SUB_BATCH_SIZE", "RunOptions"]

MAX_BATCH_SIZE = 1_000_000
ONLINE_SUB_BATCH_SIZE = 1_000
MAX_PARTITIONS = 64
ORDERS = ("auto", "key", "physical")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: object, low: int, high: int | None, words: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{_flag(name)} must be {words}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{_flag(name)} must be at most {high}, got {value!r}")


def _check_number(name: str, value: object, *, zero_ok: bool, optional: bool, unit: str) -> None:
    if value is None and optional:
        return
    if _is_number(value) and (value > 0 or (zero_ok and value == 0)):  # type: ignore[operator]
        return
    words = ("zero or " if zero_ok else "") + f"a positive number{unit}"
    raise ValueError(f"{_flag(name)} must be {words}, got {value!r}")


@dataclass(frozen=True)
class RunOptions:
    """How a run goes: batch size, pacing and safety limits (the `enqueue` options).

    A batch of `batch_size` rows is the unit of pacing; it commits every
    `rows_per_transaction` rows (`backfills.sub_batches`), so no row stays locked for a
    whole batch while the application works beside the run.

    Times are in seconds. Constructing does not validate; `validate()`, `from_json()` and
    `replace()` do, and `RunStore` validates before writing.
    """

    batch_size: int = 10_000
    sub_batch_size: int | None = None  # None: see `rows_per_transaction`
    sleep: float = 0.1
    max_rows_per_second: float | None = None
    target_batch_seconds: float | None = None
    lock_timeout: float = 2.0
    statement_timeout: float = 30.0
    max_replication_lag: float = 10.0
    max_row_errors: int = 1000
    partitions: int = 1
    max_latency_ratio: float = 1.5
    order: str = "auto"

    def validate(self) -> None:
        """Raise `ValueError` (one sentence naming the command-line option) on a bad value."""
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE, "a positive whole number")
        if self.sub_batch_size is not None:
            _check_int("sub_batch_size", self.sub_batch_size, 1, MAX_BATCH_SIZE, "a positive whole number")
        _check_number("sleep", self.sleep, zero_ok=True, optional=False, unit=" of seconds")
        _check_number("max_rows_per_second", self.max_rows_per_second, zero_ok=False, optional=True,
                      unit=" of rows per second")
        _check_number("target_batch_seconds", self.target_batch_seconds, zero_ok=False, optional=True,
                      unit=" of seconds")
        for name in ("lock_timeout", "statement_timeout", "max_replication_lag"):
            _check_number(name, getattr(self, name), zero_ok=False, optional=False, unit=" of seconds")
        _check_int("max_row_errors", self.max_row_errors, 0, None, "zero or a positive whole number")
        _check_number("max_latency_ratio", self.max_latency_ratio, zero_ok=True, optional=False, unit="")
        if 0 < self.max_latency_ratio <= 1:
            raise ValueError(f"--max-latency-ratio must be 0 (off) or above 1, got {self.max_latency_ratio}")
        _check_int("partitions", self.partitions, 1, MAX_PARTITIONS,
                   f"a whole number from 1 to {MAX_PARTITIONS}")
        if self.order not in ORDERS:
            raise ValueError(f"--order must be one of {', '.join(ORDERS)}, got {self.order!r}")

    def rows_per_transaction(self, batch_size: int) -> int:
        """Rows a batch of `batch_size` commits at a time: `--sub-batch-size` when given;
        otherwise 1,000 while the foreground guard is on, and the whole batch with it off
        (`--max-latency-ratio 0`, a maintenance window: nobody's row locks to keep short,
        and ten commits per batch cost up to a third of the run's speed)."""
        if self.sub_batch_size is not None:
            return min(self.sub_batch_size, batch_size)
        return min(ONLINE_SUB_BATCH_SIZE, batch_size) if self.max_latency_ratio else batch_size

    def to_json(self) -> dict[str, object]:
        """Every option by field name (JSON-serialisable; `None` for unset limits)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RunOptions:
        """Options from `to_json()` output; missing keys take defaults, unknown keys raise `ValueError`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"run options must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - _OPTION_FIELDS)
        if unknown:
            raise ValueError(f"unknown run option(s): {', '.join(map(str, unknown))}")
        options = cls(**{key: _as_float(key, value) for key, value in data.items()})  # type: ignore[arg-type]
        options.validate()
        return options

    def replace(self, **changes: Any) -> RunOptions:
        """A validated copy with `changes` applied (unknown names raise `ValueError`)."""
        return RunOptions.from_json({**self.to_json(), **changes})


_OPTION_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions))
_FLOAT_FIELDS = frozenset({"sleep", "max_rows_per_second", "target_batch_seconds", "lock_timeout",
                           "statement_timeout", "max_replication_lag", "max_latency_ratio"})


def _as_float(key: str, value: object) -> object:
    """Whole numbers stored for float options come back from JSON as int: make them float."""
    if key in _FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


