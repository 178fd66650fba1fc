-- Share links: a read-only web page of a story at /s/{token}.
--
-- The token is random (secrets.token_urlsafe, 144 bits), so a link cannot be
-- guessed; revoking sets `revoked_at` and the page answers 404 from then on.
-- A story has at most one live link: sharing it again gives the same one, and
-- sharing after a revoke makes a new one. A deleted story takes its links with it.
CREATE TABLE shares (
    token       TEXT    PRIMARY KEY,
    story_id    INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    created_by  INTEGER,                          -- Discord user id; NULL over HTTP
    created_at  REAL    NOT NULL,
    revoked_at  REAL
);
CREATE UNIQUE INDEX shares_live_by_story ON shares (story_id) WHERE revoked_at IS NULL;

-- The names share pages show for the people who wrote the parts, as the bot
-- last saw them in Discord (the page itself never asks Discord). /forgetme
-- deletes a person's row; a part whose writer has no row reads "someone".
CREATE TABLE display_names (
    user_id     INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    updated_at  REAL    NOT NULL
);

-- A server's admins may turn sharing off: no new links, and the pages of the
-- server's stories answer 404 while it is off.
ALTER TABLE guild_settings ADD COLUMN sharing INTEGER NOT NULL DEFAULT 1;
