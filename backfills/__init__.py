"""backfills"""
