"""Celery app, tasks, settings, database access and the `backfill` command line."""
