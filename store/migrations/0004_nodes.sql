-- Version 4: the relay nodes of a cluster, which node holds a session to
-- which route's agent, and which agent instance holds an MCP session
-- (times in Unix milliseconds). A single relay on SQLite leaves them empty.
CREATE TABLE IF NOT EXISTS nodes (
    id            TEXT PRIMARY KEY,
    agent_address TEXT NOT NULL,
    peer_address  TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_sessions (
    route    TEXT NOT NULL,
    node     TEXT NOT NULL,
    instance TEXT NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (route, node, instance)
);
CREATE INDEX IF NOT EXISTS agent_sessions_node ON agent_sessions (node);
CREATE TABLE IF NOT EXISTS mcp_sessions (
    id       TEXT PRIMARY KEY,
    route    TEXT NOT NULL,
    instance TEXT NOT NULL,
    at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mcp_sessions_at ON mcp_sessions (at);
