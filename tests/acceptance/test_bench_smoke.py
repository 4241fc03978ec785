"""`python -m bench --quick` end to end: real servers, every method, results and plot
written where asked, the README left alone (a smoke run is no result to publish)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)  # every method, the heavy load and the partitions: 4-5 minutes on 2 cores
def test_a_quick_bench_measures_every_method_and_writes_its_results(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--backfills", "aois_status",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["complete"] is True and results["sizes"] == [20_000]
    [scenario] = results["scenarios"]
    methods = scenario["methods"]
    assert set(methods) == {"plain_update", "runbook_loop", "worker_sleep0", "worker_physical", "worker_defaults",
                            "bare_keyset_loop", "bare_block_loop"}
    for name in ("plain_update", "worker_sleep0", "worker_physical", "worker_defaults", "bare_keyset_loop",
                 "bare_block_loop"):
        assert methods[name]["rows"] == 20_000, name
        assert methods[name]["wal_bytes_per_row_median"] > 0, name
    assert methods["worker_sleep0"]["batches_median"] == 2
    assert all(isinstance(m["autovacuums"], int) and m["autovacuums"] >= 0
               for runs in scenario["raw"].values() for m in runs)
    assert methods["worker_sleep0"]["outside_batch_ms_median"] is not None
    assert scenario["foreground_ms"]["alone"]["transactions"] > 0
    assert isinstance(scenario["foreground_ms"]["alone"]["autovacuums"], int)
    during = {m: w[0] for m, w in scenario["foreground_ms"].items() if m != "alone"}
    assert set(during) == {"worker_sleep0", "worker_physical", "worker_defaults"}
    assert all(w["paired_alone_p99_ms"] > 0 for w in during.values()), during  # each window has its own yardstick
    assert (tmp_path / "throughput.png").stat().st_size > 10_000
    assert (REPO / "README.md").read_text() == readme
