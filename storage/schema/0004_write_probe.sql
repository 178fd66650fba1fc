-- One row at most, written and removed by Store.probe_write: /readyz asks the
-- disk whether it takes a write before a story is lost to a full disk.
CREATE TABLE write_probe (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    data  BLOB NOT NULL
);
