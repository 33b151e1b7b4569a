-- Case-insensitive uniqueness: Ada@x.org and ada@x.org are one account.
-- (Numbered to match the PostgreSQL folder, so both databases report the same version.)
CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower_key ON users (lower(email));
CREATE UNIQUE INDEX IF NOT EXISTS users_username_lower_key ON users (lower(username));
