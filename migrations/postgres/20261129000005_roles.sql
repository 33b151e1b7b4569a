-- Authorization: roles, the permissions each holds, the roles each account holds; disabling
-- accounts; the last login. `admin` and `user` are built in: `admin` holds every permission,
-- `user` (given to every account, including those that exist now) holds none of them.
-- Times the SQL compares are Unix seconds, as for sessions; the users columns are timestamps,
-- as the users table's others are.
ALTER TABLE users ADD COLUMN IF NOT EXISTS disabled_at TIMESTAMPTZ;
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_login_at TIMESTAMPTZ;

CREATE TABLE roles (
    name         VARCHAR(64) PRIMARY KEY,
    description  VARCHAR(500) NOT NULL DEFAULT '',
    builtin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE role_permissions (
    role_name   VARCHAR(64) NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    permission  VARCHAR(64) NOT NULL,
    PRIMARY KEY (role_name, permission)
);

CREATE TABLE user_roles (
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_name   VARCHAR(64) NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, role_name)
);
CREATE INDEX user_roles_role_name_idx ON user_roles (role_name);

INSERT INTO roles (name, description, builtin, created_at, updated_at) VALUES
    ('admin', 'Every permission', TRUE, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT), CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)),
    ('user', 'Every account; no admin permission', TRUE, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT), CAST(EXTRACT(EPOCH FROM now()) AS BIGINT));
INSERT INTO role_permissions (role_name, permission) VALUES
    ('admin', 'users:read'), ('admin', 'users:write'), ('admin', 'users:delete'),
    ('admin', 'sessions:revoke'), ('admin', 'roles:read'), ('admin', 'roles:write'),
    ('admin', 'audit:read');
INSERT INTO user_roles (user_id, role_name, granted_at)
    SELECT id, 'user', CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) FROM users;
