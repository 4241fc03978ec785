-- 003_drop_copilot_threads: CONTRACT step of the copilot_threads ->
-- ai_assistant_threads rename (runbook, Expand/Contract Pattern, step 5).
--
-- What: drops the old table. Apply only after every running instance of the
-- application reads and writes ai_assistant_threads alone, and after the
-- sync of step 3 (re-running the copy of 002) has caught the last rows
-- written by old code.
--
-- Locks: DROP TABLE takes ACCESS EXCLUSIVE on copilot_threads (unused by
-- now) and also on the tables it references, tenants and aois, because the
-- foreign key triggers on them are removed (checked on PostgreSQL 15). That
-- briefly blocks reads of tenants and aois too, but it is a catalog-only
-- change, so the locks are held for milliseconds, and the runner
-- lock_timeout plus retries keeps the request from queueing behind a long
-- transaction (and everyone else from queueing behind it). The down file
-- recreates the table and copies the rows back.

DROP TABLE IF EXISTS copilot_threads;
