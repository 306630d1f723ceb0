-- PostgreSQL, version 1: the schema of the SQLite store at its version 3
-- (times are Unix seconds in BIGINT, secrets' hashes BYTEA, lists JSON text).
-- `n` columns keep the order of insertion (SQLite's rowid).
CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    n            BIGSERIAL NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('agent', 'client')),
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    replaced_by  TEXT
);
CREATE TABLE routes (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX routes_owner ON routes (owner);
CREATE TABLE users (
    email         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE oauth_clients (
    client_id     TEXT PRIMARY KEY,
    client_name   TEXT,
    redirect_uris TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE oauth_consents (
    email      TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    route      TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (email, client_id, route)
);
CREATE TABLE oauth_sessions (
    id_hash    BYTEA PRIMARY KEY,
    csrf       TEXT NOT NULL,
    email      TEXT,
    expires_at BIGINT NOT NULL
);
CREATE TABLE oauth_codes (
    code_hash      BYTEA PRIMARY KEY,
    family         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource       TEXT NOT NULL,
    email          TEXT NOT NULL,
    scope          TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);
CREATE TABLE oauth_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BYTEA NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    family      TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    email       TEXT NOT NULL,
    resource    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    rotated_at  BIGINT
);
CREATE INDEX oauth_tokens_family ON oauth_tokens (family);
CREATE INDEX oauth_tokens_email ON oauth_tokens (email);
CREATE TABLE device_codes (
    device_hash   BYTEA PRIMARY KEY,
    user_code     TEXT NOT NULL UNIQUE,
    client_id     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    interval_secs BIGINT NOT NULL,
    last_poll_ms  BIGINT,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    email         TEXT
);
CREATE TABLE tool_pins (
    route              TEXT NOT NULL,
    tool               TEXT NOT NULL,
    hash               TEXT NOT NULL,
    definition         TEXT NOT NULL,
    pinned_at          BIGINT NOT NULL,
    pending_hash       TEXT,
    pending_definition TEXT,
    pending_since      BIGINT,
    PRIMARY KEY (route, tool)
);
CREATE TABLE route_grants (
    id         TEXT PRIMARY KEY,
    n          BIGSERIAL NOT NULL,
    route      TEXT NOT NULL,
    grantee    TEXT NOT NULL,
    tools      TEXT,
    read_only  BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    resources  TEXT NOT NULL DEFAULT '[]',
    prompts    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX route_grants_route ON route_grants (route);
CREATE TABLE identity_groups (
    email      TEXT PRIMARY KEY,
    groups     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- The change feed: every write adds its rows in its own transaction, under
-- an advisory lock taken just before (so `seq` follows commit order), and
-- a payload-less NOTIFY on `drawbridge_changes` tells the listeners.
CREATE TABLE changes (
    seq  BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    at   BIGINT NOT NULL
);
CREATE INDEX changes_at ON changes (at);
