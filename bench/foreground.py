"""Foreground impact: a steady OLTP load from pgbench (custom script: point reads and
single-row updates on `aois` by random key) and its latency percentiles."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import harness
from bench.window import WindowSampler
from worker.embedded import postgres_bin_dir

__all__ = ["Latency", "prepare_keys", "pgbench"]

SCRIPT = """\\set n random(1, {keys})
SELECT name, status FROM aois WHERE id = (SELECT id FROM bench_keys WHERE n = :n);
UPDATE aois SET updated_at = now() WHERE id = (SELECT id FROM bench_keys WHERE n = :n);
"""


@dataclass(frozen=True)
class Latency:
    """Transaction latency of the foreground load, in milliseconds."""

    transactions: int
    p50_ms: float
    p99_ms: float
    autovacuums: int | None = None  # autovacuum runs on the copy while the load ran
    window: dict[str, object] | None = None  # what the server did meanwhile (bench.window)
    paired_alone_p99_ms: float | None = None  # the same load alone on the same copy, right before


def prepare_keys(url: str) -> int:
    """`bench_keys(n, id)`: the AOI keys numbered, so pgbench can pick one at random."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET app.is_system_admin = 'true'")
        conn.execute("CREATE TABLE bench_keys AS SELECT row_number() OVER ()::int AS n, id FROM aois")
        conn.execute("ALTER TABLE bench_keys ADD PRIMARY KEY (n)")
        return int(conn.execute("SELECT count(*) FROM bench_keys").fetchone()[0])  # type: ignore[index]


def pgbench(url: str, keys: int, seconds: float, rate: int = 100, clients: int = 2) -> Latency:
    """Run the script at `rate` transactions/s for `seconds`; percentiles from the per-transaction log."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "oltp.sql"
        script.write_text(SCRIPT.format(keys=keys))
        prefix = Path(tmp) / "log"
        with WindowSampler(url) as sampler:
            subprocess.run([str(postgres_bin_dir() / "pgbench"), "-n", "-f", str(script), "-c", str(clients),
                            "-j", "1", "-T", str(max(1, int(seconds))), "-R", str(rate), "-l",
                            "--log-prefix", str(prefix), "-h", str(info.get("host", "127.0.0.1")),
                            "-p", str(info.get("port", 5432)), "-U", str(info.get("user", "postgres")),
                            str(info["dbname"])], check=True, capture_output=True, text=True)
        latencies = [int(line.split()[2]) / 1000 for log in Path(tmp).glob("log*")
                     for line in log.read_text().splitlines() if line.strip()]
    window = vars(sampler.report)
    if not latencies:
        return Latency(0, 0.0, 0.0, window=window)
    return Latency(len(latencies), harness.percentile(latencies, 50), harness.percentile(latencies, 99),
                   window=window)
