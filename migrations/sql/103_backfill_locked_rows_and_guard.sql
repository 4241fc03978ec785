-- Rows a batch skipped because another session held their lock, the foreground guard's
-- write probe, and the time each run spent throttled per reason.
-- skipped_rows:  one row per key a batch could not lock at once; revisited by key before
--                the part is finished (`resolved_at` set), or left for `verify` when it
--                stays locked longer than the run's patience (`retried_since` is when the
--                revisits began).
-- progress.rows_skipped: how many rows of the part were skipped while locked, updated in
--                the batch's own transaction like the other counters.
-- probe:         a tiny table the guard writes to, to time a durable commit.
-- throttle_time: seconds each run spent throttled, per reason.
-- New tables and a column with a constant default only: no lock on any application table.

ALTER TABLE backfill.progress ADD COLUMN IF NOT EXISTS rows_skipped bigint NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS backfill.skipped_rows (
    run_id          uuid        NOT NULL REFERENCES backfill.runs (id) ON DELETE CASCADE,
    part            integer     NOT NULL,
    key             jsonb       NOT NULL,
    skipped_at      timestamptz NOT NULL DEFAULT now(),
    retried_since   timestamptz NULL,
    resolved_at     timestamptz NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX IF NOT EXISTS skipped_rows_pending_idx
    ON backfill.skipped_rows (run_id, part, key) WHERE resolved_at IS NULL;

CREATE TABLE IF NOT EXISTS backfill.probe (
    slot    integer     PRIMARY KEY,
    at      timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS backfill.throttle_time (
    run_id      uuid             NOT NULL REFERENCES backfill.runs (id) ON DELETE CASCADE,
    reason      text             NOT NULL,
    seconds     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, reason)
);
