-- Analysis workers: fresh machines to develop on, with their owner's SSH key and a deadline.
-- `name` is unique among workers not ended; `max_deadline` bounds every extension (the
-- operator's maximum lifetime from launch).
CREATE TABLE workers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    instance_id   TEXT,
    instance_type TEXT NOT NULL,
    ssh_key       TEXT NOT NULL,
    state         TEXT NOT NULL,
    address       TEXT,
    created_at    TEXT NOT NULL,
    deadline      TEXT NOT NULL,
    max_deadline  TEXT NOT NULL,
    ended_at      TEXT,
    end_reason    TEXT,
    notify        TEXT,
    warned        INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX workers_live_name ON workers (name) WHERE state <> 'ended';
CREATE INDEX workers_by_owner ON workers (owner);

-- A user's own notification defaults (webhook, email), for what is not a job's: workers.
ALTER TABLE users ADD COLUMN notify TEXT;
