-- 004_add_jobs_error_message: EXPAND step, nullable jobs.error_message TEXT.
--
-- What: adds the column in which the application records why a job failed
-- (runbook, Planned Migration, Add jobs.error_message). Old failed jobs are
-- filled later by the jobs_error_message backfill from result->>error.
--
-- Locks: a nullable column without a default is a catalog-only change (no
-- table rewrite, no scan). It still needs a short ACCESS EXCLUSIVE lock on
-- jobs, which the runner lock_timeout keeps from queueing behind long
-- transactions. IF NOT EXISTS makes a re-run a no-op.

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS error_message text;
