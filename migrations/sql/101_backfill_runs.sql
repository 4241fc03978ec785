-- The tool's own durable state, in schema `backfill`, apart from the application's tables.
-- runs:       one row per backfill run (state, options, timestamps, failure reason).
-- progress:   one row per key range of a run: its cursor and exact counters, updated in the
--             same transaction as each batch, so they never drift from the data after a crash.
-- row_errors: rows that could not be changed, with their key and the reason.
-- New tables only: no lock on any application table.

CREATE SCHEMA IF NOT EXISTS backfill;

CREATE TABLE IF NOT EXISTS backfill.runs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    backfill        text        NOT NULL,
    state           text        NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'paused', 'succeeded',
                                     'completed_with_errors', 'failed', 'cancelled')),
    options         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    tenant          uuid        NULL,
    parent_run_id   uuid        NULL REFERENCES backfill.runs (id) ON DELETE SET NULL,
    rows_estimate   bigint      NULL,
    last_error      text        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz NULL,
    finished_at     timestamptz NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- At most one active run per backfill, enforced by the database itself.
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active_per_backfill
    ON backfill.runs (backfill) WHERE state IN ('queued', 'running', 'paused');
CREATE INDEX IF NOT EXISTS runs_backfill_created_idx ON backfill.runs (backfill, created_at DESC);

CREATE TABLE IF NOT EXISTS backfill.progress (
    run_id          uuid        NOT NULL REFERENCES backfill.runs (id) ON DELETE CASCADE,
    part            integer     NOT NULL DEFAULT 0,
    lower_key       jsonb       NULL,
    upper_key       jsonb       NULL,
    cursor          jsonb       NULL,
    done            boolean     NOT NULL DEFAULT false,
    rows_processed  bigint      NOT NULL DEFAULT 0,
    rows_scanned    bigint      NOT NULL DEFAULT 0,
    batches         bigint      NOT NULL DEFAULT 0,
    row_errors      bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, part)
) WITH (fillfactor = 50);

CREATE TABLE IF NOT EXISTS backfill.row_errors (
    run_id      uuid        NOT NULL REFERENCES backfill.runs (id) ON DELETE CASCADE,
    key         jsonb       NOT NULL,
    error       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, key)
);
