-- Version 5: secrets a cluster shares (the self-signed CA, the ACME
-- certificate and challenges) and leases (one node orders the ACME
-- certificate); times in Unix milliseconds. A single relay on SQLite keeps
-- its certificates in the state directory and leaves them empty.
CREATE TABLE IF NOT EXISTS secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
