"""Schemathesis hooks for cerego: a fresh access token for every authenticated request.

Loaded through SCHEMATHESIS_HOOKS by tests/contract/run. Each token comes from its own login, so
a generated `POST /auth/logout` or `/auth/logout-all` ends only sessions nobody else relies on
(a token shared across the run would be revoked by the first logout and leave every later call
testing only the 401 path). A request that already carries an Authorization header (set by an
OpenAPI link in the stateful phase) keeps it.

In the stateful phase, a schema-valid sign-up gets a unique prefix on its username and email:
generated addresses repeat so often that most sign-ups would end in 409, and the chains that
start there (sign-up → login → me / sessions / refresh / logout) would rarely be walked.
"""

import itertools
import json
import os
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["CEREGO_URL"].rstrip("/")
PASSWORD = "contract tester's long pass phrase"


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


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/auth/(me|logout|logout-all|sessions|password/change|email/verification)$")
class FreshLogin:
    """Signs the test accounts up once, then logs in for every request that needs a token.

    `POST /auth/logout-all` gets an account of its own: it ends every session of its user, and
    would otherwise end the tokens the other worker is using at that moment.
    """

    signed_up = set()

    def get(self, case, context):
        username = "contract-all" if context.operation.path == "/auth/logout-all" else "contract"
        if username not in FreshLogin.signed_up:
            account = {"email": f"{username}@example.com", "username": username, "password": PASSWORD}
            status, _ = _post("/auth/signup", account)
            assert status in (201, 409), f"sign-up of {username}: {status}"
            FreshLogin.signed_up.add(username)
        status, tokens = _post("/auth/login", {"username": username, "password": PASSWORD})
        assert status == 200, f"login of {username}: {status}"
        return tokens["access_token"]

    def set(self, case, data, context):
        # Generation of security parameters is off (schemathesis.toml), so an Authorization
        # header already present was put there by an OpenAPI link: keep the linked token.
        headers = dict(case.headers or {})
        if not any(name.lower() == "authorization" for name in headers):
            headers["Authorization"] = f"Bearer {data}"
        case.headers = headers


_unique = itertools.count()


@schemathesis.hook
def before_call(context, case, kwargs):
    """Makes a positive stateful sign-up's username and email unique (see the module comment)."""
    meta = case.meta
    if case.method.upper() != "POST" or case.operation.path != "/auth/signup" or meta is None:
        return
    if meta.phase.name != "stateful" or meta.generation.mode.is_negative:
        return
    body = case.body
    if not isinstance(body, dict):
        return
    tag = f"s{next(_unique):05d}"
    username, email = body.get("username"), body.get("email")
    if isinstance(username, str):
        body["username"] = (tag + username)[:32]
    if isinstance(email, str) and "@" in email:
        local, domain = email.rsplit("@", 1)
        body["email"] = f"{tag}{local}"[:64] + "@" + domain
