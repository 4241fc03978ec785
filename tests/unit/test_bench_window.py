"""Unit tests for bench.window's arithmetic (no server)."""

from __future__ import annotations

import os
from collections import Counter

from bench.window import WindowSampler


def test_a_window_is_the_difference_of_its_counters_and_cpu_per_process_kind() -> None:
    sampler = WindowSampler("postgresql://unused")
    hz = os.sysconf("SC_CLK_TCK")
    sampler._start = ((1000, 10, 5.0, 100.0), 3, {1: ("load", hz), 2: ("walwriter", 0)})
    sampler._waits = Counter({"CPU": 5, "LWLock:WALWrite": 7})
    # pid 1 went on, pid 3 came and went within the window (its last ticks were seen), pid 2 did nothing
    sampler._fill((5000, 30, 7.5, 350.0), 4, {1: ("load", 3 * hz), 2: ("walwriter", 0), 3: ("load", hz)})
    report = sampler.report
    assert (report.wal_bytes, report.full_page_images, report.checkpoints) == (4000, 20, 1)
    assert (report.wal_write_ms, report.wal_sync_ms) == (2.5, 250.0)
    assert report.waits == {"LWLock:WALWrite": 7, "CPU": 5}
    assert report.cpu_seconds == {"load": 3.0}
