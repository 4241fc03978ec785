"""Everything about live runs that lives in Redis.

Redis holds what must be shared between workers on any machine and be seen before the
next batch: the per-partition lease, the live checkpoint, the operator's commands
(pause / resume / cancel), live overrides (`backfill set`), a namespace-wide kill switch
and a rows-per-second token bucket. The durable truth (runs, cursors, row errors) is in
PostgreSQL; losing Redis loses only liveness, never progress.

Keys are `{namespace}:run:{run_id}:{what}` for one run and `{namespace}:{what}` for
the namespace. Every run key except leases (which carry their own expiry) gets a TTL of
`RUN_TTL_SECONDS`, refreshed whenever the run writes, so abandoned runs clean themselves up.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

__all__ = [
    "COMMANDS",
    "OVERRIDE_TYPES",
    "RUN_TTL_SECONDS",
    "Checkpoint",
    "KillSwitch",
    "Lease",
    "RunControl",
    "TokenBucket",
    "checkpoint_from_hash",
    "checkpoint_to_hash",
    "escape_glob",
    "reconcile_lock",
]

RUN_TTL_SECONDS = 7 * 24 * 3600
BATCH_HISTORY = 10_000
EVENT_HISTORY = 50
"""How long a run's keys survive after its last write."""

COMMANDS = ("pause", "cancel", "run")
"""Commands an operator can request for a run (`run` = resume)."""

OVERRIDE_TYPES: Mapping[str, type] = {"batch_size": int, "sleep": float, "max_rows_per_second": float}
"""Live-tunable settings of a run and the type each one is read back as."""

_SCAN_COUNT = 500

# KEYS[1] = lease key, ARGV[1] = our token, ARGV[2] = ttl in ms.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] = lease key, ARGV[1] = our token.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] = bucket hash {tokens, ts}; ARGV[1] = rate (tokens/s), ARGV[2] = n.
# A missing bucket is full (one second of rate). Refill is capped at max(rate, n).
# Tokens may go negative: the debt divided by the rate is the caller's wait, so
# concurrent callers are served in the order Redis ran their scripts.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local cap = math.max(rate, n)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = rate
  ts = now
end
local elapsed = math.max(0, now - ts)
tokens = math.min(cap, tokens + elapsed * rate) - n
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
local refill_ms = math.ceil((rate - tokens) / rate * 1000) + 1000
redis.call('PEXPIRE', KEYS[1], refill_ms)
local wait = 0
if tokens < 0 then
  wait = -tokens / rate
end
return string.format('%.6f', wait)
"""


def _text(value: Any) -> str | None:
    """A Redis reply as `str` (clients may or may not decode responses)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds for PX/PEXPIRE (at least 1)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {seconds!r}")
    return max(1, math.ceil(seconds * 1000))


def escape_glob(text: str) -> str:
    """Escape the glob characters of SCAN MATCH (`* ? [ ] \\`) so `text` matches literally."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


@dataclass(frozen=True)
class Checkpoint:
    """The live position and counters of one partition of a run."""

    cursor: list[str] | None
    rows_processed: int
    batches: int
    row_errors: int
    at: float
    batch_size: int
    last_batch_seconds: float
    throttled: str | None


def checkpoint_to_hash(checkpoint: Checkpoint) -> dict[str, str]:
    """Hash fields for a checkpoint; `cursor` and `throttled` are omitted when None."""
    fields = {
        "rows_processed": str(checkpoint.rows_processed),
        "batches": str(checkpoint.batches),
        "row_errors": str(checkpoint.row_errors),
        "at": repr(float(checkpoint.at)),
        "batch_size": str(checkpoint.batch_size),
        "last_batch_seconds": repr(float(checkpoint.last_batch_seconds)),
    }
    if checkpoint.cursor is not None:
        fields["cursor"] = json.dumps([str(part) for part in checkpoint.cursor])
    if checkpoint.throttled is not None:
        fields["throttled"] = checkpoint.throttled
    return fields


def checkpoint_from_hash(raw: Mapping[Any, Any]) -> Checkpoint:
    """The inverse of `checkpoint_to_hash` (accepts bytes or str keys and values)."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    cursor = fields.get("cursor")
    return Checkpoint(
        cursor=json.loads(cursor) if cursor is not None else None,
        rows_processed=int(fields.get("rows_processed") or 0),
        batches=int(fields.get("batches") or 0),
        row_errors=int(fields.get("row_errors") or 0),
        at=float(fields.get("at") or 0.0),
        batch_size=int(fields.get("batch_size") or 0),
        last_batch_seconds=float(fields.get("last_batch_seconds") or 0.0),
        throttled=fields.get("throttled"),
    )


def _check_override(name: str, value: float | int) -> float | int:
    """Validate one override and return it with its proper type."""
    kind = OVERRIDE_TYPES.get(name)
    if kind is None:
        raise ValueError(f"unknown override {name!r}; allowed: {', '.join(OVERRIDE_TYPES)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    typed: float | int = kind(value)
    if typed < 0 or (typed == 0 and name != "sleep"):
        raise ValueError(f"{name} must be {'>= 0' if name == 'sleep' else '> 0'}, got {value!r}")
    return typed


class Lease:
    """SET NX PX with a random token; only the holder can renew or release (Lua compare-and-set)."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = _ms(ttl_seconds)
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it. True if we now hold it."""
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend our lease by its ttl; False if we no longer hold it (expired or taken)."""
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> bool:
        """Give the lease up; False (and nothing deleted) if we do not hold it."""
        return bool(self._release(keys=[self.key], args=[self.token]))

    def holder_ttl(self) -> float | None:
        """Seconds left on whoever holds the key; None if free, inf if it has no expiry."""
        ttl_ms = self.client.pttl(self.key)
        if ttl_ms == -2:
            return None
        if ttl_ms == -1:
            return math.inf
        return ttl_ms / 1000.0


class TokenBucket:
    """Rows-per-second limit shared by every worker of a run (one Lua script, Redis TIME as the clock).

    Capacity = one second of rate (at least the requested n, so a batch larger than the
    rate still passes, just waiting longer).
    """

    def __init__(self, client: redis.Redis, key: str, rate: float) -> None:
        if isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        self.client = client
        self.key = key
        self.rate = float(rate)
        self._take = client.register_script(_TAKE_LUA)

    def take(self, n: int) -> float:
        """Reserve `n` tokens; return the seconds to wait before proceeding (0.0 if none).

        Tokens may go negative: the debt is the wait, and concurrent callers queue fairly
        in the order their reservations reached Redis.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        reply = self._take(keys=[self.key], args=[repr(self.rate), int(n)])
        return float(_text(reply) or 0.0)


class RunControl:
    """Everything about one run that lives in Redis."""

    def __init__(self, client: redis.Redis, namespace: str, run_id: str) -> None:
        if not run_id or ":" in run_id:
            raise ValueError(f"run id must be non-empty and contain no ':', got {run_id!r}")
        self.client = client
        self.namespace = namespace
        self.run_id = run_id
        self.prefix = f"{namespace}:run:{run_id}:"

    def key(self, what: str) -> str:
        """The Redis key `{namespace}:run:{run_id}:{what}`."""
        return self.prefix + what

    def lease(self, part: int, ttl_seconds: float) -> Lease:
        """The lease of partition `part` (key `...:lease:{part}`)."""
        return Lease(self.client, self.key(f"lease:{int(part)}"), ttl_seconds)

    def token_bucket(self, rate: float) -> TokenBucket:
        """The run's shared rows-per-second bucket (key `...:bucket`)."""
        return TokenBucket(self.client, self.key("bucket"), rate)

    def request(self, command: str) -> None:
        """Record an operator command: "pause", "cancel" or "run" (resume)."""
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
        self.client.set(self.key("control"), command, ex=RUN_TTL_SECONDS)

    def requested(self) -> str | None:
        """The last requested command, None if nothing was requested."""
        return _text(self.client.get(self.key("control")))

    def set_overrides(self, **values: float | int) -> None:
        """Retune the live run (batch_size, sleep, max_rows_per_second); ValueError otherwise."""
        typed = {name: _check_override(name, value) for name, value in values.items()}
        if not typed:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key("overrides"), mapping={k: repr(v) for k, v in typed.items()})
        pipe.expire(self.key("overrides"), RUN_TTL_SECONDS)
        pipe.execute()

    def overrides(self) -> dict[str, float | int]:
        """The overrides set so far, typed back (batch_size int, the others float)."""
        raw = self.client.hgetall(self.key("overrides"))
        result: dict[str, float | int] = {}
        for key, value in raw.items():
            name, text = _text(key) or "", _text(value) or ""
            if name in OVERRIDE_TYPES:
                number = float(text)
                result[name] = int(number) if OVERRIDE_TYPES[name] is int else number
        return result

    def write_checkpoint(self, part: int, checkpoint: Checkpoint) -> None:
        """Replace partition `part`'s checkpoint and refresh the run's TTLs, in one round trip."""
        key = self.key(f"checkpoint:{int(part)}")
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        fields: dict[Any, Any] = checkpoint_to_hash(checkpoint)
        pipe.hset(key, mapping=fields)
        pipe.sadd(self.key("parts"), int(part))
        for what in (f"checkpoint:{int(part)}", "parts", "control", "overrides"):
            pipe.expire(self.key(what), RUN_TTL_SECONDS)
        pipe.execute()

    def record_batch_seconds(self, seconds: float) -> None:
        """Keep the duration of a committed batch (the newest BATCH_HISTORY of the run)."""
        key = self.key("batch_seconds")
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, f"{seconds:.6f}")
        pipe.ltrim(key, 0, BATCH_HISTORY - 1)
        pipe.expire(key, RUN_TTL_SECONDS)
        pipe.execute()

    def batch_seconds(self) -> list[float]:
        """Durations of the run's most recent batches, newest first."""
        return [float(v) for v in self.client.lrange(self.key("batch_seconds"), 0, -1)]

    def add_event(self, text: str, at: float | None = None) -> None:
        """Record something an operator should read later (failover, give-up, kill switch)."""
        key = self.key("events")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at if at is not None else time.time()))
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, f"{stamp} {text}")
        pipe.ltrim(key, 0, EVENT_HISTORY - 1)
        pipe.expire(key, RUN_TTL_SECONDS)
        pipe.execute()

    def events(self, limit: int = EVENT_HISTORY) -> list[str]:
        """The run's most recent events, oldest first."""
        return [_text(v) or "" for v in reversed(self.client.lrange(self.key("events"), 0, limit - 1))]

    def checkpoints(self) -> dict[int, Checkpoint]:
        """The checkpoint of every partition that wrote one, by partition number."""
        parts = sorted(int(_text(p) or 0) for p in self.client.smembers(self.key("parts")))
        if not parts:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for part in parts:
            pipe.hgetall(self.key(f"checkpoint:{part}"))
        replies = pipe.execute()
        return {part: checkpoint_from_hash(raw) for part, raw in zip(parts, replies) if raw}

    def heartbeat_age(self) -> float | None:
        """Seconds since the newest checkpoint was written, None if there is none."""
        stamps = [cp.at for cp in self.checkpoints().values()]
        if not stamps:
            return None
        return max(0.0, time.time() - max(stamps))

    def clear(self) -> None:
        """Delete every key of this run (SCAN MATCH, never KEYS)."""
        batch: list[Any] = []
        for key in self.client.scan_iter(match=escape_glob(self.prefix) + "*", count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                self.client.delete(*batch)
                batch.clear()
        if batch:
            self.client.delete(*batch)


class KillSwitch:
    """A global stop for every run of this namespace: {ns}:kill."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.key = f"{namespace}:kill"

    def engage(self, reason: str) -> None:
        """Stop every run of the namespace before its next batch, recording why."""
        if not reason:
            raise ValueError("a kill switch needs a reason")
        self.client.set(self.key, reason)

    def release(self) -> None:
        """Let runs proceed again."""
        self.client.delete(self.key)

    def reason(self) -> str | None:
        """Why the switch is engaged, None if it is not."""
        return _text(self.client.get(self.key))


def reconcile_lock(client: redis.Redis, namespace: str, ttl_seconds: float) -> bool:
    """SET {ns}:reconciler NX PX: True for the one caller that may reconcile this tick."""
    return bool(client.set(f"{namespace}:reconciler", secrets.token_hex(8), nx=True, px=_ms(ttl_seconds)))
