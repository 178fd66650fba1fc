-- One state model for work on a story: every generation is a run of its own.
--
-- A run writes one part under `parent_id`: the first part of a story (start),
-- the next part after a part (continue), or a new version of the part
-- `replaces_id` (reroll, a sibling under the same parent). Its state moves
-- queued -> generating -> done | cancelled | failed | interrupted; `part_id` is
-- the part it wrote. A story's status is no longer stored: it is derived from
-- its runs, so it cannot drift from the work itself.
--
-- Each Discord message the bot posted shows one thing: a part (a long part
-- spans several messages, `chunk` 0, 1, ...) once it is complete, or a run
-- while it is queued, being written, or ended without a part. `shows` records
-- what the message displays now, as last confirmed by Discord; when it differs
-- from what the database says it should show (an edit that failed, a crash),
-- the message is brought up to date at the next start. When a story or part is
-- deleted its messages stay, with nothing to show, until they are cleared.

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    story_id      INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    parent_id     INTEGER NOT NULL REFERENCES parts (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL CHECK (kind IN ('start', 'continue', 'reroll')),
    replaces_id   INTEGER REFERENCES parts (id) ON DELETE SET NULL,
    requested_by  INTEGER,                         -- Discord user id; NULL over HTTP
    state         TEXT    NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'generating', 'done', 'failed',
                                   'cancelled', 'interrupted')),
    seed          INTEGER,
    part_id       INTEGER REFERENCES parts (id) ON DELETE SET NULL,
    error         TEXT,                            -- why it failed, in words for a person
    created_at    REAL    NOT NULL,
    updated_at    REAL    NOT NULL
);
CREATE INDEX runs_by_story ON runs (story_id, id);
CREATE INDEX runs_unfinished ON runs (state) WHERE state IN ('queued', 'generating');
CREATE INDEX runs_by_part ON runs (part_id);
CREATE INDEX runs_by_parent ON runs (parent_id);
CREATE INDEX runs_by_replaced ON runs (replaces_id);

CREATE TABLE messages (
    message_id  INTEGER PRIMARY KEY,
    channel_id  INTEGER NOT NULL,
    story_id    INTEGER REFERENCES stories (id) ON DELETE SET NULL,
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    part_id     INTEGER REFERENCES parts (id) ON DELETE SET NULL,
    chunk       INTEGER NOT NULL DEFAULT 0,
    shows       TEXT    NOT NULL,                  -- e.g. 'part:12:0', 'run:7:queued', 'gone'
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL
);
CREATE INDEX messages_by_part ON messages (part_id, chunk);
CREATE INDEX messages_by_run ON messages (run_id);
CREATE INDEX messages_by_story ON messages (story_id);

-- What was in flight or ended badly becomes a run, so Retry and recovery find it.
INSERT INTO runs (story_id, parent_id, kind, requested_by, state, created_at, updated_at)
SELECT s.id,
       (SELECT MAX(p.id) FROM parts p WHERE p.story_id = s.id),
       CASE WHEN (SELECT COUNT(*) FROM parts p WHERE p.story_id = s.id) = 1
            THEN 'start' ELSE 'continue' END,
       s.author_id, s.status, s.updated_at, s.updated_at
FROM stories s
WHERE s.status IN ('queued', 'generating', 'failed', 'cancelled', 'interrupted');

INSERT INTO messages (message_id, channel_id, story_id, part_id, chunk, shows,
                      created_at, updated_at)
SELECT pm.message_id, pm.channel_id, p.story_id, pm.part_id,
       (SELECT COUNT(*) FROM part_messages o
         WHERE o.part_id = pm.part_id AND o.message_id < pm.message_id),
       'part:' || pm.part_id || ':' ||
       (SELECT COUNT(*) FROM part_messages o
         WHERE o.part_id = pm.part_id AND o.message_id < pm.message_id),
       pm.created_at, pm.created_at
FROM part_messages pm JOIN parts p ON p.id = pm.part_id;

-- A message that showed a story in progress shows its run; 'unknown' differs
-- from anything it should show, so it is brought up to date at the next start.
INSERT OR IGNORE INTO messages (message_id, channel_id, story_id, run_id, chunk, shows,
                                created_at, updated_at)
SELECT pm.message_id, pm.channel_id, pm.story_id,
       (SELECT MAX(r.id) FROM runs r WHERE r.story_id = pm.story_id),
       0, 'unknown', pm.created_at, pm.created_at
FROM pending_messages pm;

DROP TABLE pending_messages;
DROP TABLE part_messages;
DROP INDEX stories_by_status;
ALTER TABLE stories DROP COLUMN status;
