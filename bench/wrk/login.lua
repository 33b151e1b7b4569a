-- POST /auth/login as the seeded user $LOGIN_USER with $LOGIN_PASSWORD.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"username": "%s", "password": "%s"}', os.getenv("LOGIN_USER"), os.getenv("LOGIN_PASSWORD"))
