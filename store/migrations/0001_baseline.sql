-- Version 1: the schema of the relay before versioned migrations (every
-- table created if missing, so a state directory of that relay upgrades in place).
CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('agent', 'client')),
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    replaced_by  TEXT
);
CREATE TABLE IF NOT EXISTS routes (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    email         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id     TEXT PRIMARY KEY,
    client_name   TEXT,
    redirect_uris TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_consents (
    email      TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    route      TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (email, client_id, route)
);
CREATE TABLE IF NOT EXISTS oauth_sessions (
    id_hash    BLOB PRIMARY KEY,
    csrf       TEXT NOT NULL,
    email      TEXT,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_codes (
    code_hash      BLOB PRIMARY KEY,
    family         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource       TEXT NOT NULL,
    email          TEXT NOT NULL,
    scope          TEXT NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash BLOB NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    family      TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    email       TEXT NOT NULL,
    resource    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    rotated_at  INTEGER
);
CREATE INDEX IF NOT EXISTS oauth_tokens_family ON oauth_tokens (family);
CREATE TABLE IF NOT EXISTS device_codes (
    device_hash   BLOB PRIMARY KEY,
    user_code     TEXT NOT NULL UNIQUE,
    client_id     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    interval_secs INTEGER NOT NULL,
    last_poll_ms  INTEGER,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    email         TEXT
);
CREATE TABLE IF NOT EXISTS tool_pins (
    route              TEXT NOT NULL,
    tool               TEXT NOT NULL,
    hash               TEXT NOT NULL,
    definition         TEXT NOT NULL,
    pinned_at          INTEGER NOT NULL,
    pending_hash       TEXT,
    pending_definition TEXT,
    pending_since      INTEGER,
    PRIMARY KEY (route, tool)
);
CREATE TABLE IF NOT EXISTS route_grants (
    id         TEXT PRIMARY KEY,
    route      TEXT NOT NULL,
    grantee    TEXT NOT NULL,
    tools      TEXT,
    read_only  INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    resources  TEXT NOT NULL DEFAULT '[]',
    prompts    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS route_grants_route ON route_grants (route);
CREATE TABLE IF NOT EXISTS identity_groups (
    email      TEXT PRIMARY KEY,
    groups     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
