-- Forgets each run's batch order and closing-pass counters (runs then read as key order).
ALTER TABLE backfill.progress DROP COLUMN IF EXISTS pass_start_rows;
ALTER TABLE backfill.progress DROP COLUMN IF EXISTS closing_pass;
ALTER TABLE backfill.runs DROP COLUMN IF EXISTS order_reason;
ALTER TABLE backfill.runs DROP COLUMN IF EXISTS batch_order;
