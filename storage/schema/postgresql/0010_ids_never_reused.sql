-- SQLite's schema 0010 makes its ids AUTOINCREMENT, so that a deleted row's id
-- is never given again. PostgreSQL's identity columns never give an id twice
-- already (storage.copy starts them after the highest id SQLite ever gave):
-- nothing changes here; the file keeps both folders at the same version.
SELECT 1;
