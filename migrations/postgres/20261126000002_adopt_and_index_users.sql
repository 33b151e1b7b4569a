-- Bring a table created by the FastAPI system (SERIAL id, TIMESTAMP WITHOUT TIME ZONE,
-- nullable timestamps, case-sensitive unique indexes) in line with cerego's schema.
-- On a table the previous migration created, every statement here is a no-op.
ALTER TABLE users ALTER COLUMN id TYPE BIGINT;
ALTER TABLE users
    ALTER COLUMN created_at TYPE TIMESTAMPTZ USING created_at AT TIME ZONE 'UTC';
ALTER TABLE users
    ALTER COLUMN updated_at TYPE TIMESTAMPTZ USING updated_at AT TIME ZONE 'UTC';
UPDATE users SET created_at = now() WHERE created_at IS NULL;
UPDATE users SET updated_at = created_at WHERE updated_at IS NULL;
ALTER TABLE users
    ALTER COLUMN email SET NOT NULL,
    ALTER COLUMN username SET NOT NULL,
    ALTER COLUMN hashed_password SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET NOT NULL,
    ALTER COLUMN updated_at SET DEFAULT now();

-- Case-insensitive uniqueness: Ada@x.org and ada@x.org are one account.
CREATE UNIQUE INDEX IF NOT EXISTS users_email_lower_key ON users (lower(email));
CREATE UNIQUE INDEX IF NOT EXISTS users_username_lower_key ON users (lower(username));
