-- down 007_add_stac_scene_cache: drops the cache table (runbook rollback).
--
-- Only cached provider answers are lost, they are fetched again on demand.
-- No other table references it, so only the table itself is locked.

DROP TABLE IF EXISTS stac_scene_cache;
