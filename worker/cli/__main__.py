"""`python -m worker.cli`: the `backfill` command."""

from worker.cli import main

main()
