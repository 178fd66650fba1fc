-- The process that owns a run (its INSTANCE_ID). Several storybot processes may
-- share one PostgreSQL database; at start-up each marks only its own unfinished
-- runs interrupted, never the runs another process is still writing. On SQLite
-- (one process) it is recorded too, and recovery still takes every run.
ALTER TABLE runs ADD COLUMN owner TEXT;
CREATE INDEX runs_unfinished_by_owner ON runs (owner) WHERE state IN ('queued', 'generating');
