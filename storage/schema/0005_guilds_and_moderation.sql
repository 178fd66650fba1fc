-- Per-server settings, the server's daily counts, and moderation marks.
--
-- guild_settings: one row per Discord server that an admin configured. A NULL
-- means "the operator's default" (genres and channels: all of them). Lists are
-- JSON arrays. `left_at` is set when the bot leaves the server; settings of a
-- server left long enough ago are deleted (Store.forget_guilds_left_before).
CREATE TABLE guild_settings (
    guild_id              INTEGER PRIMARY KEY,
    genres                TEXT,                      -- JSON keys enabled; NULL: all
    channels              TEXT,                      -- JSON channel ids; NULL: all
    cooldown_s            REAL,
    max_active            INTEGER,
    daily_quota           INTEGER,                   -- stories a day; NULL: none
    continue_policy       TEXT    NOT NULL DEFAULT 'anyone'
                          CHECK (continue_policy IN ('anyone', 'author', 'role')),
    continue_role_id      INTEGER,
    default_length        TEXT,
    filter_terms          TEXT    NOT NULL DEFAULT '[]',  -- JSON: the server's extra terms
    report_threshold      INTEGER NOT NULL DEFAULT 3,     -- members' reports that hide a part
    admin_report_threshold INTEGER NOT NULL DEFAULT 1,    -- admins' reports that hide a part
    left_at               REAL,
    updated_at            REAL    NOT NULL
);
CREATE INDEX guild_settings_left ON guild_settings (left_at) WHERE left_at IS NOT NULL;

-- What happened in a server on a day (UTC, 'YYYY-MM-DD'): the daily quota counts
-- stories started; admins see the moderation counts.
CREATE TABLE guild_counts (
    guild_id  INTEGER NOT NULL,
    day       TEXT    NOT NULL,
    stories   INTEGER NOT NULL DEFAULT 0,
    refused   INTEGER NOT NULL DEFAULT 0,   -- prompts the filter refused
    masked    INTEGER NOT NULL DEFAULT 0,   -- generated parts the filter masked
    reports   INTEGER NOT NULL DEFAULT 0,
    hidden    INTEGER NOT NULL DEFAULT 0,   -- parts hidden after reports
    PRIMARY KEY (guild_id, day)
);

-- A generated part the filter masked says so; a part hidden after reports is
-- shown nowhere until an admin restores it (or deletes it).
ALTER TABLE parts ADD COLUMN masked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE parts ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
CREATE INDEX parts_hidden ON parts (story_id) WHERE hidden = 1;

-- One report per person per part; `admin` says whose threshold it counts toward.
CREATE TABLE reports (
    part_id     INTEGER NOT NULL REFERENCES parts (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL,
    admin       INTEGER NOT NULL DEFAULT 0,
    created_at  REAL    NOT NULL,
    PRIMARY KEY (part_id, user_id)
);
