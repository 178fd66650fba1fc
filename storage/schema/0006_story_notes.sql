-- A story's memory and author's note (KoboldAI's steering texts), the notes each
-- part was written with, and whether anyone in a server may edit them.
ALTER TABLE stories ADD COLUMN memory TEXT NOT NULL DEFAULT '';
ALTER TABLE stories ADD COLUMN authors_note TEXT NOT NULL DEFAULT '';
ALTER TABLE parts ADD COLUMN memory TEXT;         -- as they were when it was written
ALTER TABLE parts ADD COLUMN authors_note TEXT;
ALTER TABLE guild_settings ADD COLUMN notes_by_anyone INTEGER NOT NULL DEFAULT 0;
