-- Several replicas on one database (PostgreSQL), and the same bookkeeping on SQLite.
--
-- The scheduler lease: exactly one process at a time holds it and runs the scheduler. `epoch`
-- grows at every takeover and is the fencing number stamped on the runs a leader inserts;
-- `expires_ms` is the database's clock, in milliseconds since 1970.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
INSERT INTO leases (name, holder, epoch, expires_ms) VALUES ('scheduler', '', 0, 0);

-- Changes made on any replica that the leader's scheduler must follow: `job` (re-read the job's
-- row), `run` (run it now, as run `run_id`), `cancel` (cancel run `run_id`).
CREATE TABLE job_changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    job    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    run_id TEXT,
    origin TEXT NOT NULL,
    at     TEXT NOT NULL
);

-- Server-wide settings, such as which secrets key the stored secrets were sealed with.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The fencing number (lease epoch) of the leader that inserted each run.
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
