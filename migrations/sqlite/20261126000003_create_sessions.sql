-- Sessions (one per login) and their refresh tokens (one row per rotation).
-- Times that SQL compares are Unix seconds, as in the PostgreSQL schema.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    user_agent   TEXT,
    ip           TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  BLOB NOT NULL UNIQUE,
    access_jti  TEXT NOT NULL,
    issued_at   INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
