-- telejob's state. Timestamps are RFC 3339 UTC strings with a fixed width, so they sort.

CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    is_admin   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

-- Only hashes of tokens are stored.
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    label      TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE jobs (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL REFERENCES users(name),
    spec       TEXT NOT NULL,           -- JobSpec as JSON
    code_key   TEXT,                    -- private-store key of the current code version
    paused     INTEGER NOT NULL DEFAULT 0,
    expired    INTEGER NOT NULL DEFAULT 0,
    cursor     TEXT NOT NULL,           -- last slot handled
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE code_versions (
    job         TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    key         TEXT NOT NULL,
    size        INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    PRIMARY KEY (job, sha256)
);

-- One row per run. (job, slot_key) is unique: a slot can never run twice.
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    job           TEXT NOT NULL,
    slot_key      TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    scheduled_for TEXT NOT NULL,
    state         TEXT NOT NULL,
    record        TEXT NOT NULL,        -- Run as JSON
    created_at    TEXT NOT NULL,
    UNIQUE (job, slot_key)
);
CREATE INDEX runs_by_job ON runs (job, scheduled_for DESC);
CREATE INDEX runs_by_state ON runs (state);

-- Each notification event is sent once.
CREATE TABLE notifications (
    key        TEXT PRIMARY KEY,
    job        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at    TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
