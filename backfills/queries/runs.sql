-- Durable run records (backfill.runs, backfill.progress, backfill.row_errors), used by
-- backfills.runs.RunStore. Keys and cursors are JSON arrays of text; bind parameters
-- are cast explicitly (`CAST(:p AS type)`, never `:p::type`, which sa.text() misreads).

-- name: create_run
INSERT INTO backfill.runs (backfill, state, options, tenant, parent_run_id, rows_estimate, batch_order,
                           order_reason)
VALUES (:backfill, 'queued', CAST(:options AS jsonb), CAST(:tenant AS uuid),
        CAST(:parent_run_id AS uuid), CAST(:rows_estimate AS bigint), :order, :order_reason)
RETURNING id::text AS id;

-- name: create_part
INSERT INTO backfill.progress (run_id, part, lower_key, upper_key, cursor)
VALUES (CAST(:run_id AS uuid), :part, CAST(:lower_key AS jsonb), CAST(:upper_key AS jsonb),
        CAST(:lower_key AS jsonb));

-- name: lock_parent
SELECT 1 FROM backfill.runs WHERE id = CAST(:id AS uuid) FOR KEY SHARE;

-- name: active_run_for_backfill
SELECT id::text AS id, state
FROM backfill.runs
WHERE backfill = :backfill AND state = ANY (CAST(:states AS text[]));

-- name: get_run
SELECT id::text AS id, backfill, state, options, tenant::text AS tenant,
       parent_run_id::text AS parent_run_id, rows_estimate, last_error,
       created_at, started_at, finished_at, updated_at, batch_order AS "order", order_reason,
       (SELECT coalesce(jsonb_object_agg(tt.reason, round(tt.seconds::numeric, 3)), '{}'::jsonb)
        FROM backfill.throttle_time tt WHERE tt.run_id = runs.id) AS throttle_seconds
FROM backfill.runs
WHERE id = CAST(:id AS uuid);

-- name: list_runs
SELECT id::text AS id, backfill, state, options, tenant::text AS tenant,
       parent_run_id::text AS parent_run_id, rows_estimate, last_error,
       created_at, started_at, finished_at, updated_at, batch_order AS "order", order_reason,
       (SELECT coalesce(jsonb_object_agg(tt.reason, round(tt.seconds::numeric, 3)), '{}'::jsonb)
        FROM backfill.throttle_time tt WHERE tt.run_id = runs.id) AS throttle_seconds
FROM backfill.runs
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: active_runs
SELECT id::text AS id, backfill, state, options, tenant::text AS tenant,
       parent_run_id::text AS parent_run_id, rows_estimate, last_error,
       created_at, started_at, finished_at, updated_at, batch_order AS "order", order_reason,
       (SELECT coalesce(jsonb_object_agg(tt.reason, round(tt.seconds::numeric, 3)), '{}'::jsonb)
        FROM backfill.throttle_time tt WHERE tt.run_id = runs.id) AS throttle_seconds
FROM backfill.runs
WHERE state = ANY (CAST(:states AS text[]))
ORDER BY created_at, id;

-- name: get_parts
SELECT run_id::text AS run_id, part, lower_key, upper_key, cursor, done,
       rows_processed, rows_scanned, batches, row_errors, updated_at, rows_skipped, closing_pass, pass_start_rows,
       (SELECT count(*) FROM backfill.skipped_rows s
        WHERE s.run_id = p.run_id AND s.part = p.part AND s.resolved_at IS NULL) AS rows_still_locked
FROM backfill.progress p
WHERE run_id = ANY (CAST(:ids AS uuid[]))
ORDER BY run_id, part;

-- name: lock_run
SELECT state FROM backfill.runs WHERE id = CAST(:id AS uuid) FOR UPDATE;

-- name: set_state
UPDATE backfill.runs
SET state = :state,
    started_at = CASE WHEN CAST(:starts AS boolean) THEN coalesce(started_at, now())
                      ELSE started_at END,
    finished_at = CASE WHEN CAST(:finishes AS boolean) THEN now() ELSE finished_at END,
    last_error = coalesce(CAST(:error AS text), last_error),
    updated_at = now()
WHERE id = CAST(:id AS uuid);

-- name: update_options
UPDATE backfill.runs
SET options = CAST(:options AS jsonb), updated_at = now()
WHERE id = CAST(:id AS uuid);

-- name: mark_part_done
UPDATE backfill.progress
SET done = true, updated_at = now()
WHERE run_id = CAST(:run_id AS uuid) AND part = :part
RETURNING part;

-- name: set_cursor
UPDATE backfill.progress
SET cursor = CAST(:cursor AS jsonb), updated_at = now()
WHERE run_id = CAST(:run_id AS uuid) AND part = :part
RETURNING part;

-- name: run_exists
SELECT 1 FROM backfill.runs WHERE id = CAST(:id AS uuid);

-- name: row_errors
SELECT key, error, created_at
FROM backfill.row_errors
WHERE run_id = CAST(:run_id AS uuid)
ORDER BY key
LIMIT CAST(:limit AS bigint);

-- name: row_error_count
SELECT count(*) FROM backfill.row_errors WHERE run_id = CAST(:run_id AS uuid);

-- name: touch
UPDATE backfill.runs SET updated_at = now() WHERE id = CAST(:id AS uuid)
RETURNING id;

-- name: create_scratch_run
INSERT INTO backfill.runs (id, backfill, state) VALUES (CAST(:id AS uuid), :backfill, 'succeeded');

-- name: create_scratch_part
INSERT INTO backfill.progress (run_id, part) VALUES (CAST(:id AS uuid), 0);

-- name: lock_parts
SELECT part, done, closing_pass, rows_processed + row_errors AS found_total, pass_start_rows
FROM backfill.progress
WHERE run_id = CAST(:run_id AS uuid)
ORDER BY part
FOR UPDATE;

-- name: reopen_part
UPDATE backfill.progress
SET done = false, cursor = NULL, closing_pass = closing_pass + 1,
    pass_start_rows = rows_processed + row_errors, updated_at = now()
WHERE run_id = CAST(:run_id AS uuid) AND part = :part
RETURNING part;
