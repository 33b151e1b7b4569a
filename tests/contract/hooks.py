"""Schemathesis hooks for cerego: a fresh access token for every authenticated request.

Loaded through SCHEMATHESIS_HOOKS by tests/contract/run. Each token comes from its own login, so
a generated `POST /auth/logout` or `/auth/logout-all` ends only sessions nobody else relies on
(a token shared across the run would be revoked by the first logout and leave every later call
testing only the 401 path). A request that already carries an Authorization header (set by an
OpenAPI link in the stateful phase, or deliberately malformed by a negative test) keeps it.
"""

import json
import os
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["CEREGO_URL"].rstrip("/")
USER = {"email": "contract@example.com", "username": "contract", "password": "contract tester's long pass phrase"}


def _post(path, body):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, None


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/auth/(me|logout|logout-all|sessions)")
class FreshLogin:
    """Signs the test account up once, then logs it in for every request that needs a token."""

    signed_up = False

    def get(self, case, context):
        if not FreshLogin.signed_up:
            status, _ = _post("/auth/signup", USER)
            assert status in (201, 409), f"sign-up of the contract account: {status}"
            FreshLogin.signed_up = True
        status, tokens = _post("/auth/login", {"username": USER["username"], "password": USER["password"]})
        assert status == 200, f"login of the contract account: {status}"
        return tokens["access_token"]

    def set(self, case, data, context):
        headers = case.headers or {}
        if not any(name.lower() == "authorization" for name in headers):
            headers["Authorization"] = f"Bearer {data}"
        case.headers = headers
