-- Stories are trees of parts: a prompt at the root, generated parts below it.
-- Continuing adds a child; rerolling adds a sibling. Times are Unix seconds.

CREATE TABLE stories (
    id          INTEGER PRIMARY KEY,
    author_id   INTEGER,                          -- Discord user id; NULL over HTTP
    source      TEXT    NOT NULL DEFAULT 'discord'
                CHECK (source IN ('discord', 'api', 'cli')),
    guild_id    INTEGER,                          -- NULL for HTTP and DMs
    channel_id  INTEGER,
    genre       TEXT    NOT NULL,
    title       TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'generating', 'done', 'failed',
                                  'cancelled', 'interrupted')),
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL
);
CREATE INDEX stories_by_author ON stories (author_id, created_at DESC, id DESC);
CREATE INDEX stories_by_status ON stories (status);

CREATE TABLE parts (
    id             INTEGER PRIMARY KEY,
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
    CHECK ((kind = 'prompt') = (parent_id IS NULL))
);
CREATE INDEX parts_by_story ON parts (story_id, id);
CREATE INDEX parts_by_parent ON parts (parent_id);
CREATE INDEX parts_by_requester ON parts (requested_by);

-- A part may never hang under a part of another story.
CREATE TRIGGER parts_parent_in_same_story
BEFORE INSERT ON parts
WHEN NEW.parent_id IS NOT NULL
 AND (SELECT story_id FROM parts WHERE id = NEW.parent_id) IS NOT NEW.story_id
BEGIN
    SELECT RAISE(ABORT, 'parent part belongs to another story');
END;

-- The Discord messages that show a part (a long part spans several).
CREATE TABLE part_messages (
    message_id  INTEGER PRIMARY KEY,
    part_id     INTEGER NOT NULL REFERENCES parts (id) ON DELETE CASCADE,
    channel_id  INTEGER NOT NULL,
    created_at  REAL    NOT NULL
);
CREATE INDEX part_messages_by_part ON part_messages (part_id);
