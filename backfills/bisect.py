"""Isolating the rows that make a batch fail. Pure: the caller supplies how to try a
chunk of keys and how to record a bad one.

A failed chunk is split in two and each half tried, in key order, until every failing
chunk is a single key. Good rows always commit; each bad key is recorded once; keys
are visited in ascending order, so a cursor moved after each step never goes back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["isolate_failures"]

K = TypeVar("K")


def isolate_failures(
    keys: Sequence[K],
    attempt: Callable[[Sequence[K]], BaseException | None],
    record: Callable[[K, BaseException], None],
    first_error: BaseException | None = None,
) -> int:
    """Apply `keys` chunk by chunk: `attempt(chunk)` returns None on success or the
    error; each key that fails on its own is passed to `record`. Returns the number of
    attempts made (about k·log2(n) for k bad keys among n). `first_error` is the
    error already seen for the whole of `keys`, which saves trying it again."""
    attempts = 0
    stack: list[tuple[Sequence[K], BaseException | None]] = [(keys, first_error)]
    while stack:
        chunk, known_error = stack.pop()
        if not chunk:
            continue
        error = known_error
        if error is None:
            attempts += 1
            error = attempt(chunk)
            if error is None:
                continue
        if len(chunk) == 1:
            record(chunk[0], error)
            continue
        middle = len(chunk) // 2
        stack.append((chunk[middle:], None))
        stack.append((chunk[:middle], None))
    return attempts
