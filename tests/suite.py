"""`make test`: the whole suite in two pytest processes at once, each with servers of its own.

The acceptance tests spend most of their time waiting on real worker processes (a 2-core
machine stays about half idle while they run), so the other tiers run beside them: the
suite takes about as long as the acceptance tier alone. Each process prints its lines with
its tier's name in front, as they come; the exit status is the first failing one's (pytest's
5, no test collected, is a failure too).

    python -m tests.suite [pytest options...]
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

# tier name -> pytest arguments; the acceptance tier's `-v` undoes `-q` to pytest's default: one
# line per test file as it ends (its ~70 tests would take the whole run to fill one line of dots,
# which shows no progress in a CI log)
GROUPS: dict[str, tuple[str, ...]] = {
    "acceptance": ("-v", "tests/acceptance"),
    "unit+integration+security": ("tests/unit", "tests/integration", "tests/security"),
}
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")


def _relay(name: str, stream: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()


def run(extra: Sequence[str] = ()) -> int:
    """Both groups at once; 0 only when both passed."""
    lock = threading.Lock()
    procs: dict[str, subprocess.Popen[str]] = {}
    relays = []
    for name, args in GROUPS.items():
        proc = subprocess.Popen([*PYTEST, *extra, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        procs[name] = proc
        relay = threading.Thread(target=_relay, args=(name, proc.stdout, lock))
        relay.start()
        relays.append(relay)
    codes = {name: proc.wait() for name, proc in procs.items()}
    for relay in relays:
        relay.join()
    for name, code in codes.items():
        print(f"{name}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    return next((code for code in codes.values() if code != 0), 0)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
