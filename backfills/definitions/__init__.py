"""The shipped backfills, one module each; each module exposes `BACKFILL`."""
