"""The sampler thread: probes one table's foreground latency all the time while runs work.

One sampler per table samples for every worker of the database: it holds a lease in
Redis (`<key>:sampler`), renewed as it goes; the other workers' samplers wait for the
lease to fall free (its holder stopped or died) and then take over. The holder takes a
sample every `SAMPLE_INTERVAL` seconds and publishes the reading
(`backfills.latency.summarize`) every `PUBLISH_INTERVAL`. A sampler that nobody asked
for a reading for `IDLE_STOP` seconds stops; asking again starts it again.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable

import redis as redis_lib

from backfills.foreground import LatencyProbe, reading_to_json
from backfills.latency import IDLE_WINDOW, Sample, summarize

__all__ = ["ProbeSampler", "Samplers", "SAMPLE_INTERVAL", "PUBLISH_INTERVAL", "IDLE_STOP"]

SAMPLE_INTERVAL = 0.2
PUBLISH_INTERVAL = 1.0
IDLE_STOP = 10.0
LEASE_SECONDS = 3.0
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
          "elseif redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 else return 0 end")


class ProbeSampler:
    """Samples `probe` on a thread of its own and publishes readings under `key`."""

    def __init__(self, probe: LatencyProbe, client: redis_lib.Redis, key: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.probe = probe
        self.client = client
        self.key = key
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.samples: collections.deque[Sample] = collections.deque()
        self.used_at = clock()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._published_at = 0.0
        self._stopping = threading.Event()

    def ensure(self) -> None:
        """Note that a reading is wanted; start the thread if it is not running."""
        with self._lock:
            self.used_at = self.clock()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"probe-sampler:{self.probe.table}",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            while self.clock() - self.used_at < IDLE_STOP and not self._stopping.is_set():
                started = self.clock()
                if self._hold():
                    self.step()
                else:
                    self.samples.clear()  # another worker samples; ours would be stale when it hands over
                self._stopping.wait(max(0.0, SAMPLE_INTERVAL - (self.clock() - started)))
        except redis_lib.RedisError:
            pass  # the next `ensure` starts again; meanwhile the reading goes stale and the guard waits
        finally:
            self._let_go()

    def stop(self) -> None:
        """Stop the thread and let the lease go (`ensure` starts it again)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._stopping.clear()

    def _hold(self) -> bool:
        return bool(self.client.eval(_RENEW, 1, f"{self.key}:sampler", self.token, int(LEASE_SECONDS * 1000)))

    def _let_go(self) -> None:
        try:
            if self.client.get(f"{self.key}:sampler") == self.token.encode():
                self.client.delete(f"{self.key}:sampler")
        except redis_lib.RedisError:
            pass

    def step(self) -> None:
        """Take one sample, forget the ones too old to count, publish when due."""
        sample = self.probe.sample()
        self.samples.append(sample)
        while self.samples and sample.at - self.samples[0].at > IDLE_WINDOW:
            self.samples.popleft()
        now = self.clock()
        if now - self._published_at >= PUBLISH_INTERVAL or len(self.samples) == 3:
            self.client.set(f"{self.key}:reading", reading_to_json(summarize(list(self.samples), now)),
                            px=int(PUBLISH_INTERVAL * 5000))
            self._published_at = now


class Samplers:
    """The samplers of one worker process, one per table (kept across slices)."""

    def __init__(self) -> None:
        self._by_key: dict[str, ProbeSampler] = {}
        self._lock = threading.Lock()

    def ensure(self, key: str, make: Callable[[], ProbeSampler]) -> None:
        """Keep the sampler of `key` going (made by `make` the first time)."""
        with self._lock:
            sampler = self._by_key.get(key)
            if sampler is None:
                sampler = self._by_key[key] = make()
        sampler.ensure()

    def stop(self) -> None:
        """Stop every sampler of this process."""
        with self._lock:
            samplers = list(self._by_key.values())
        for sampler in samplers:
            sampler.stop()
