-- The audit trail: one row per security event, written in the transaction of the change it
-- records, chained by SHA-256 (see docs/audit.md).
--
-- `id` is the row's place in the chain, handed out by `audit_chain` (not a sequence): ids are
-- consecutive and in commit order, so a missing id is a deleted row. `occurred_at` is Unix
-- microseconds, UTC (exact on both databases, hashed as stored; `to_timestamp(occurred_at /
-- 1e6)` shows it as a timestamp). `details` is the canonical JSON text that was hashed (sorted
-- keys, no spaces); `details::jsonb` queries it. No foreign keys: an event outlives the account
-- it names.
CREATE TABLE audit_events (
    id              BIGINT PRIMARY KEY,
    occurred_at     BIGINT NOT NULL,
    event           VARCHAR(64) NOT NULL,
    actor_user_id   BIGINT,
    target_user_id  BIGINT,
    ip              VARCHAR(64),
    user_agent      VARCHAR(512),
    request_id      VARCHAR(128),
    outcome         VARCHAR(16) NOT NULL CHECK (outcome IN ('success', 'failure')),
    details         TEXT NOT NULL,
    prev_hash       CHAR(64) NOT NULL,
    hash            CHAR(64) NOT NULL
);
CREATE INDEX audit_events_target_idx ON audit_events (target_user_id, id);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_user_id, id);
CREATE INDEX audit_events_event_idx ON audit_events (event, id);
CREATE INDEX audit_events_occurred_at_idx ON audit_events (occurred_at);

-- The chain's one row: its newest event (`last_*`) and the newest event a retention purge
-- deleted (`anchor_*`, 0 and the zero hash before any purge, and when that event occurred),
-- where verification starts.
-- Every append locks this row (an UPDATE) just before its transaction commits, so appends take
-- turns and each one's `prev_hash` is the hash of the row committed before it.
CREATE TABLE audit_chain (
    id           SMALLINT PRIMARY KEY CHECK (id = 1),
    last_id      BIGINT NOT NULL,
    last_hash    CHAR(64) NOT NULL,
    anchor_id    BIGINT NOT NULL,
    anchor_hash  CHAR(64) NOT NULL,
    anchor_occurred_at BIGINT
);
INSERT INTO audit_chain (id, last_id, last_hash, anchor_id, anchor_hash) VALUES
    (1, 0, repeat('0', 64), 0, repeat('0', 64));
