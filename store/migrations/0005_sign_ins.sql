-- Version 5: sign-ins under way at an upstream identity provider, by the
-- SHA-256 of their `state` (times in Unix milliseconds).
CREATE TABLE IF NOT EXISTS pending_sign_ins (
    state_hash   BLOB PRIMARY KEY,
    provider     TEXT NOT NULL,
    session_hash BLOB NOT NULL,
    address      TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    back         TEXT NOT NULL,
    started_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_sign_ins_session ON pending_sign_ins (session_hash);
CREATE INDEX IF NOT EXISTS pending_sign_ins_address ON pending_sign_ins (address);
CREATE INDEX IF NOT EXISTS pending_sign_ins_started ON pending_sign_ins (started_ms);
