-- The audit trail; as in the PostgreSQL schema (see docs/audit.md).
CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY NOT NULL,
    occurred_at     INTEGER NOT NULL,
    event           TEXT NOT NULL,
    actor_user_id   INTEGER,
    target_user_id  INTEGER,
    ip              TEXT,
    user_agent      TEXT,
    request_id      TEXT,
    outcome         TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    details         TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
CREATE INDEX audit_events_target_idx ON audit_events (target_user_id, id);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_user_id, id);
CREATE INDEX audit_events_event_idx ON audit_events (event, id);
CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at);

CREATE TABLE audit_chain (
    id           INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_id      INTEGER NOT NULL,
    last_hash    TEXT NOT NULL,
    anchor_id    INTEGER NOT NULL,
    anchor_hash  TEXT NOT NULL,
    anchor_occurred_at INTEGER
);
INSERT INTO audit_chain (id, last_id, last_hash, anchor_id, anchor_hash) VALUES
    (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0,
     '0000000000000000000000000000000000000000000000000000000000000000');
