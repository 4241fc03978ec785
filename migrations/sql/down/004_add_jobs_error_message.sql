-- down 004_add_jobs_error_message: drops jobs.error_message.
--
-- Catalog-only (the column is only marked dropped), short ACCESS EXCLUSIVE
-- lock on jobs. The recorded failure reasons are lost, which is what
-- reverting this migration means (runbook rollback for 004).

ALTER TABLE jobs DROP COLUMN IF EXISTS error_message;
