-- PostgreSQL, version 3: the cluster's audit table. Each node ships the
-- events of its local audit log (its state directory's hash chain) here,
-- once each: keyed by the log (`node`) and the event's `seq` in its chain.
-- `line` is the event's line as the node wrote it (type json keeps its exact
-- text, so its `hash` can be checked again); the other columns are what
-- `relay audit` filters on.
CREATE TABLE audit_events (
    node       TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    time       TEXT NOT NULL,
    time_ms    BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    route      TEXT NOT NULL,
    decision   TEXT NOT NULL,
    line       JSON NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX audit_events_time ON audit_events (time_ms);
