-- Removes the tool's own tables: every run record and row error is lost.
DROP TABLE IF EXISTS backfill.row_errors;
DROP TABLE IF EXISTS backfill.progress;
DROP TABLE IF EXISTS backfill.runs;
DROP SCHEMA IF EXISTS backfill;
