-- Ids are never given out twice. Without AUTOINCREMENT, SQLite gives a new row
-- the largest id in use plus one: delete the newest story (or part, run, vote)
-- and the next one gets its id again. Those ids live on outside the database, in
-- buttons of messages already posted (story:continue:<part>, story:retry:<run>,
-- vote:<vote>), in the message book, in /stories/<id> links, and in work still
-- in flight, so an old Continue button, or a run finishing after its story was
-- deleted, would act on somebody else's new story. AUTOINCREMENT keeps the
-- highest id ever given in sqlite_sequence and counts on from it.
--
-- SQLite cannot add AUTOINCREMENT to a table: each table is built again (the
-- documented way: a new table, the rows copied with their ids, the old one
-- dropped, the new one renamed), with its indexes and triggers. storage.db runs
-- this with foreign keys off, as that procedure needs (dropping the old table
-- must not cascade), and checks every reference before it commits. Ids deleted
-- before the upgrade are known only where a posted message still shows them
-- (below); the rest cannot be known.

CREATE TABLE stories_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    author_id   INTEGER,                          -- Discord user id; NULL over HTTP
    source      TEXT    NOT NULL DEFAULT 'discord'
                CHECK (source IN ('discord', 'api', 'cli')),
    guild_id    INTEGER,                          -- NULL for HTTP and DMs
    channel_id  INTEGER,
    genre       TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    memory      TEXT    NOT NULL DEFAULT '',
    authors_note TEXT   NOT NULL DEFAULT ''
);
INSERT INTO stories_new (id, author_id, source, guild_id, channel_id, genre, title,
                         created_at, updated_at, memory, authors_note)
SELECT id, author_id, source, guild_id, channel_id, genre, title,
       created_at, updated_at, memory, authors_note
FROM stories;
DROP TABLE stories;
ALTER TABLE stories_new RENAME TO stories;
CREATE INDEX stories_by_author ON stories (author_id, created_at DESC, id DESC);

CREATE TABLE parts_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    story_id       INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    parent_id      INTEGER REFERENCES parts (id) ON DELETE CASCADE,
    kind           TEXT    NOT NULL CHECK (kind IN ('prompt', 'generated')),
    text           TEXT    NOT NULL,
    requested_by   INTEGER,                       -- who asked for this part
    params         TEXT,                          -- JSON of the generation params
    seed           INTEGER,
    model_id       TEXT,
    prompt_tokens  INTEGER,
    new_tokens     INTEGER,
    queued_s       REAL,
    generation_s   REAL,
    finish_reason  TEXT,
    created_at     REAL    NOT NULL,
    masked         INTEGER NOT NULL DEFAULT 0,
    hidden         INTEGER NOT NULL DEFAULT 0,
    memory         TEXT,
    authors_note   TEXT,
    candidate      INTEGER NOT NULL DEFAULT 0,
    CHECK ((kind = 'prompt') = (parent_id IS NULL))
);
INSERT INTO parts_new (id, story_id, parent_id, kind, text, requested_by, params, seed,
                       model_id, prompt_tokens, new_tokens, queued_s, generation_s,
                       finish_reason, created_at, masked, hidden, memory, authors_note,
                       candidate)
SELECT id, story_id, parent_id, kind, text, requested_by, params, seed,
       model_id, prompt_tokens, new_tokens, queued_s, generation_s,
       finish_reason, created_at, masked, hidden, memory, authors_note, candidate
FROM parts;
DROP TABLE parts;
ALTER TABLE parts_new RENAME TO parts;
CREATE INDEX parts_by_story ON parts (story_id, id);
CREATE INDEX parts_by_parent ON parts (parent_id);
CREATE INDEX parts_by_requester ON parts (requested_by);
CREATE INDEX parts_hidden ON parts (story_id) WHERE hidden = 1;
CREATE TRIGGER parts_parent_in_same_story
BEFORE INSERT ON parts
WHEN NEW.parent_id IS NOT NULL
 AND (SELECT story_id FROM parts WHERE id = NEW.parent_id) IS NOT NEW.story_id
BEGIN
    SELECT RAISE(ABORT, 'parent part belongs to another story');
END;

CREATE TABLE runs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
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
    updated_at    REAL    NOT NULL,
    owner         TEXT
);
INSERT INTO runs_new (id, story_id, parent_id, kind, replaces_id, requested_by, state, seed,
                      part_id, error, created_at, updated_at, owner)
SELECT id, story_id, parent_id, kind, replaces_id, requested_by, state, seed,
       part_id, error, created_at, updated_at, owner
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE INDEX runs_by_story ON runs (story_id, id);
CREATE INDEX runs_unfinished ON runs (state) WHERE state IN ('queued', 'generating');
CREATE INDEX runs_by_part ON runs (part_id);
CREATE INDEX runs_by_parent ON runs (parent_id);
CREATE INDEX runs_by_replaced ON runs (replaces_id);
CREATE INDEX runs_unfinished_by_owner ON runs (owner) WHERE state IN ('queued', 'generating');

CREATE TABLE votes_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    story_id    INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    parent_id   INTEGER NOT NULL REFERENCES parts (id) ON DELETE CASCADE,
    state       TEXT    NOT NULL DEFAULT 'writing'
                CHECK (state IN ('writing', 'open', 'closed', 'failed')),
    closes_at   REAL,                                -- Unix seconds, once open
    winner      INTEGER,                             -- the winning candidate's number
    created_at  REAL    NOT NULL
);
INSERT INTO votes_new (id, story_id, parent_id, state, closes_at, winner, created_at)
SELECT id, story_id, parent_id, state, closes_at, winner, created_at
FROM votes;
DROP TABLE votes;
ALTER TABLE votes_new RENAME TO votes;
CREATE INDEX votes_unfinished ON votes (state) WHERE state IN ('writing', 'open');

-- A message posted before the upgrade may still show (and its buttons name) a
-- part, run or vote deleted since, its tombstone not yet written: the counters
-- start above those ids too ('part:12:0', 'run:7:queued', 'vote:3:open').
INSERT INTO sqlite_sequence (name, seq)
SELECT t.name, 0
FROM (SELECT 'parts' AS name UNION ALL SELECT 'runs' UNION ALL SELECT 'votes') AS t
WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence AS s WHERE s.name = t.name);
UPDATE sqlite_sequence
SET seq = MAX(seq, COALESCE((
    SELECT MAX(CAST(substr(shows, instr(shows, ':') + 1) AS INTEGER)) FROM messages
    WHERE shows LIKE 'part:%' OR shows LIKE 'hidden:%' OR shows LIKE 'candidate:%'), 0))
WHERE name = 'parts';
UPDATE sqlite_sequence
SET seq = MAX(seq, COALESCE((
    SELECT MAX(CAST(substr(shows, instr(shows, ':') + 1) AS INTEGER)) FROM messages
    WHERE shows LIKE 'run:%'), 0))
WHERE name = 'runs';
UPDATE sqlite_sequence
SET seq = MAX(seq, COALESCE((
    SELECT MAX(CAST(substr(shows, instr(shows, ':') + 1) AS INTEGER)) FROM messages
    WHERE shows LIKE 'vote:%'), 0))
WHERE name = 'votes';
