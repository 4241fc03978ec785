-- migrate: no-transaction
--
-- down 011_add_identity_local_credentials: runbook rollback of 011.
--
-- Drops the login index CONCURRENTLY (logins keep working), then the three
-- credential columns (catalog-only, short ACCESS EXCLUSIVE lock). Local
-- passwords and pending reset tokens are lost, so local users can no longer
-- log in. No-transaction because of DROP INDEX CONCURRENTLY, IF EXISTS
-- everywhere so the file can be re-run.

DROP INDEX CONCURRENTLY IF EXISTS identities_provider_email_idx;
ALTER TABLE identities
    DROP COLUMN IF EXISTS password_hash,
    DROP COLUMN IF EXISTS password_reset_token,
    DROP COLUMN IF EXISTS password_reset_expires_at;
