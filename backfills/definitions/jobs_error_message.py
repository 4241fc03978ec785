"""jobs.error_message for FAILED jobs, from result->>'error' (expand 004)."""

from backfills.definition import Backfill

BACKFILL = Backfill(
    name="jobs_error_message",
    table="jobs",
    description="Fill error_message of FAILED jobs from result->>'error' (trimmed, at most 4000 characters).",
    needs="t.status = 'FAILED' AND t.error_message IS NULL",
    sets={
        "error_message": """coalesce(
            nullif(left(btrim(CASE WHEN jsonb_typeof(t.result) = 'object' THEN t.result ->> 'error' END, E' \t\r\n'), 4000), ''),
            'unknown: failed before error tracking')""",
    },
    tenant_column=None,
)
