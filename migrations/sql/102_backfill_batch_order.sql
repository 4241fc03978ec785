-- How a run's batches walk the table (`--order`), and the closing passes of physical runs.
-- runs.batch_order:  `key` (keyset batches) or `physical` (block ranges), chosen at enqueue.
-- runs.order_reason: why, in one sentence (`status --json` `order_reason`).
-- progress.closing_pass:    0 during a part's first pass; n during the n-th closing pass.
-- progress.pass_start_rows: rows changed or failed by the part before its current pass began.
-- The tool's own small tables only: constant defaults, no rewrite, no lock on application tables.

-- lint: allow add-column-not-null because a constant default on the tool's own small table is metadata-only
ALTER TABLE backfill.runs ADD COLUMN IF NOT EXISTS batch_order text NOT NULL DEFAULT 'key'
    CONSTRAINT runs_batch_order_check CHECK (batch_order IN ('key', 'physical'));
ALTER TABLE backfill.runs ADD COLUMN IF NOT EXISTS order_reason text NULL;
-- lint: allow add-column-not-null because a constant default on the tool's own small table is metadata-only
ALTER TABLE backfill.progress ADD COLUMN IF NOT EXISTS closing_pass integer NOT NULL DEFAULT 0;
-- lint: allow add-column-not-null because a constant default on the tool's own small table is metadata-only
ALTER TABLE backfill.progress ADD COLUMN IF NOT EXISTS pass_start_rows bigint NOT NULL DEFAULT 0;
