-- PostgreSQL, version 2: the relay nodes of a cluster, which node holds a session to
-- which route's agent, and which agent instance holds an MCP session
-- (times in Unix milliseconds). A single relay on SQLite leaves them empty.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    agent_address TEXT NOT NULL,
    peer_address  TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);
CREATE TABLE agent_sessions (
    route    TEXT NOT NULL,
    node     TEXT NOT NULL,
    instance TEXT NOT NULL,
    since    BIGINT NOT NULL,
    PRIMARY KEY (route, node, instance)
);
CREATE INDEX agent_sessions_node ON agent_sessions (node);
CREATE TABLE mcp_sessions (
    id       TEXT PRIMARY KEY,
    route    TEXT NOT NULL,
    instance TEXT NOT NULL,
    at       BIGINT NOT NULL
);
CREATE INDEX mcp_sessions_at ON mcp_sessions (at);
