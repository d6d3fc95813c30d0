-- A job's secrets, encrypted (XChaCha20-Poly1305, the job and secret names as associated data)
-- with the server's secrets key. Values are never returned by the API.
CREATE TABLE job_secrets (
    job        TEXT NOT NULL,
    name       TEXT NOT NULL,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    set_at     TEXT NOT NULL,
    PRIMARY KEY (job, name)
);
