-- A deleted job whose published data was kept: its name stays its owner's until an admin
-- releases it (which purges the data first), so no one else can take over that data.
CREATE TABLE tombstones (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    deleted_at TEXT NOT NULL
);
