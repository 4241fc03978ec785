-- down 010_add_field_feedback: drops field_feedback (runbook rollback).
--
-- The index and the policies go with the table. The feedback written since
-- 010 is lost. ACCESS EXCLUSIVE on field_feedback, and for milliseconds on
-- tenants, aois and memberships, whose foreign key triggers are removed.

DROP TABLE IF EXISTS field_feedback;
