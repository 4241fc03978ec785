-- migrate: no-transaction
--
-- 011_add_identity_local_credentials: local login (email and password) and
-- password reset (runbook, Add local auth credentials to identities).
--
-- What: three nullable columns on identities, password_hash,
-- password_reset_token and password_reset_expires_at (NULL for identities of
-- external providers), and identities_provider_email_idx on
-- (provider, email) for the login lookup.
--
-- Locks, and why no-transaction: nullable columns without a default are a
-- catalog-only change (short ACCESS EXCLUSIVE lock, no rewrite, no scan).
-- identities is a live table, so the index is built CONCURRENTLY (only
-- SHARE UPDATE EXCLUSIVE, logins keep working), which cannot run in a
-- transaction block.
-- Idempotent: ADD COLUMN IF NOT EXISTS and CREATE INDEX IF NOT EXISTS. An
-- INVALID leftover of a failed CONCURRENTLY build is dropped by the runner
-- (DROP INDEX CONCURRENTLY) before the CREATE INDEX is run again.

ALTER TABLE identities
    ADD COLUMN IF NOT EXISTS password_hash text,
    ADD COLUMN IF NOT EXISTS password_reset_token text,
    ADD COLUMN IF NOT EXISTS password_reset_expires_at timestamptz;

CREATE INDEX CONCURRENTLY IF NOT EXISTS identities_provider_email_idx
    ON identities (provider, email);
