-- Dashboard sessions, so that a restart (or another replica) does not sign people out. Only the
-- SHA-256 of a session id is stored, as for tokens.
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    "user"     TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    last_used  TEXT NOT NULL
);
CREATE INDEX sessions_last_used ON sessions (last_used);
