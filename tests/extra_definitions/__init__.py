"""Backfill definitions that live outside the engine: registered through
BACKFILL_DEFINITIONS=tests.extra_definitions, proving a fifth backfill needs no engine change."""
