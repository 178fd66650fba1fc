-- The channel votes on what happens next: candidates written together, each a
-- run whose part is a sibling of the others; members cast one ballot each
-- (changeable until the end); the winner becomes the story's next part and the
-- others stay in the tree, marked as candidates that were not chosen.
CREATE TABLE votes (
    id          INTEGER PRIMARY KEY,
    story_id    INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    parent_id   INTEGER NOT NULL REFERENCES parts (id) ON DELETE CASCADE,
    state       TEXT    NOT NULL DEFAULT 'writing'
                CHECK (state IN ('writing', 'open', 'closed', 'failed')),
    closes_at   REAL,                                -- Unix seconds, once open
    winner      INTEGER,                             -- the winning candidate's number
    created_at  REAL    NOT NULL
);
CREATE INDEX votes_unfinished ON votes (state) WHERE state IN ('writing', 'open');

CREATE TABLE vote_candidates (
    vote_id  INTEGER NOT NULL REFERENCES votes (id) ON DELETE CASCADE,
    number   INTEGER NOT NULL,                       -- 1, 2, 3 as shown
    run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    PRIMARY KEY (vote_id, number)
);
CREATE INDEX vote_candidates_by_run ON vote_candidates (run_id);

CREATE TABLE vote_ballots (
    vote_id  INTEGER NOT NULL REFERENCES votes (id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL,
    number   INTEGER NOT NULL,
    cast_at  REAL    NOT NULL,
    PRIMARY KEY (vote_id, user_id)
);

-- A candidate of a vote that is not (or not yet) the story's chosen part: the
-- story's branch never follows it.
ALTER TABLE parts ADD COLUMN candidate INTEGER NOT NULL DEFAULT 0;
-- The message that holds a vote's ballot buttons.
ALTER TABLE messages ADD COLUMN vote_id INTEGER REFERENCES votes (id) ON DELETE SET NULL;
ALTER TABLE guild_settings ADD COLUMN vote_by_default INTEGER NOT NULL DEFAULT 0;
ALTER TABLE guild_settings ADD COLUMN vote_seconds INTEGER NOT NULL DEFAULT 60;
