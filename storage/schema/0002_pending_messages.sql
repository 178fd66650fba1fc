-- Messages that show a story while it is queued or being written, before the
-- part exists. After a crash they are edited to say "interrupted" (with Retry).
CREATE TABLE pending_messages (
    message_id  INTEGER PRIMARY KEY,
    story_id    INTEGER NOT NULL REFERENCES stories (id) ON DELETE CASCADE,
    channel_id  INTEGER NOT NULL,
    created_at  REAL    NOT NULL
);
CREATE INDEX pending_messages_by_story ON pending_messages (story_id);
