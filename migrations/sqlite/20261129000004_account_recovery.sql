-- Account recovery and e-mail: verification state, single-use tokens (reset, verification) and
-- the outbox of mail waiting to be sent, as in the PostgreSQL schema.
ALTER TABLE users ADD COLUMN email_verified_at TEXT;

CREATE TABLE account_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose     TEXT NOT NULL,
    token_hash  BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX account_tokens_user_purpose_idx ON account_tokens (user_id, purpose);
CREATE INDEX account_tokens_expires_at_idx ON account_tokens (expires_at);

CREATE TABLE mail_outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    payload          BLOB NOT NULL,
    token_id         INTEGER REFERENCES account_tokens (id) ON DELETE CASCADE,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    locked_until     INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT
);
CREATE INDEX mail_outbox_next_attempt_at_idx ON mail_outbox (next_attempt_at);
CREATE INDEX mail_outbox_token_id_idx ON mail_outbox (token_id);
