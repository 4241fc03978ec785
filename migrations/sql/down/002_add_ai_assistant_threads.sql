-- down 002_add_ai_assistant_threads: undo the expand step.
--
-- Drops ai_assistant_threads (with its indexes and foreign keys).
-- copilot_threads still exists at this point (003 has been reverted first)
-- and holds every thread, so no data is lost as long as the application
-- has not yet switched to writing only the new table.
-- Locks: ACCESS EXCLUSIVE on ai_assistant_threads, and for milliseconds
-- also on tenants and aois, whose foreign key triggers are removed.
-- lock_timeout keeps the request from queueing behind long transactions.

DROP TABLE IF EXISTS ai_assistant_threads;
