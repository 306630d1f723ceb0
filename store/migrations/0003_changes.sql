-- Version 3: the change feed. Every write adds a row in its own transaction;
-- the relay's poller reads the rows after the last it saw.
CREATE TABLE IF NOT EXISTS changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    at   INTEGER NOT NULL
);
