-- down 009_add_split_batches: drops split_batches (runbook rollback).
--
-- The index and the policies go with the table. Only idempotency records
-- are lost: a split confirmed again after the rollback is no longer
-- recognised as a repeat. ACCESS EXCLUSIVE on split_batches, and for
-- milliseconds on tenants and aois, whose foreign key triggers are removed.

DROP TABLE IF EXISTS split_batches;
