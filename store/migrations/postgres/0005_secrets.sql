-- PostgreSQL, version 3: secrets a cluster shares (the self-signed CA, the
-- ACME certificate and challenges) and leases (one node orders the ACME
-- certificate); times in Unix milliseconds.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
