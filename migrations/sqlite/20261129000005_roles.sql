-- Authorization: roles, their permissions, the roles of each account; disabling accounts; the
-- last login. As in the PostgreSQL schema.
ALTER TABLE users ADD COLUMN disabled_at TEXT;
ALTER TABLE users ADD COLUMN last_login_at TEXT;

CREATE TABLE roles (
    name         TEXT PRIMARY KEY NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    builtin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE role_permissions (
    role_name   TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    permission  TEXT NOT NULL,
    PRIMARY KEY (role_name, permission)
);

CREATE TABLE user_roles (
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_name   TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, role_name)
);
CREATE INDEX user_roles_role_name_idx ON user_roles (role_name);

INSERT INTO roles (name, description, builtin, created_at, updated_at) VALUES
    ('admin', 'Every permission', TRUE, unixepoch(), unixepoch()),
    ('user', 'Every account; no admin permission', TRUE, unixepoch(), unixepoch());
INSERT INTO role_permissions (role_name, permission) VALUES
    ('admin', 'users:read'), ('admin', 'users:write'), ('admin', 'users:delete'),
    ('admin', 'sessions:revoke'), ('admin', 'roles:read'), ('admin', 'roles:write'),
    ('admin', 'audit:read');
INSERT INTO user_roles (user_id, role_name, granted_at)
    SELECT id, 'user', unixepoch() FROM users;
