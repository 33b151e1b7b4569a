"""Schemathesis hooks for cerego: a fresh access token for every authenticated request.

Loaded through SCHEMATHESIS_HOOKS by tests/contract/run. Each token comes from its own login, so
a generated `POST /auth/logout` or `/auth/logout-all` ends only sessions nobody else relies on
(a token shared across the run would be revoked by the first logout and leave every later call
testing only the 401 path). A request that already carries an Authorization header (set by an
OpenAPI link in the stateful phase) keeps it.

In the stateful phase, a schema-valid sign-up gets a unique prefix on its username and email:
generated addresses repeat so often that most sign-ups would end in 409, and the chains that
start there (sign-up → login → me / sessions / refresh / logout) would rarely be walked.

The `/admin` routes get a fresh token of the admin account the server bootstrapped from
`ADMIN_*` (tests/contract/run passes the same account as CEREGO_ADMIN_*). A generated change to
an account (PATCH, DELETE, role grants and revocations, ending sessions) whose `{id}` is one of
the accounts the hooks log in with is pointed at a throwaway account signed up for that call:
otherwise the first generated "disable user 1" would end the admin and every later admin call
would test only the 401/403 paths.
"""

import itertools
import json
import os
import threading
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["CEREGO_URL"].rstrip("/")
PASSWORD = "contract tester's long pass phrase"
ADMIN_USERNAME = os.environ["CEREGO_ADMIN_USERNAME"]
ADMIN_PASSWORD = os.environ["CEREGO_ADMIN_PASSWORD"]


def _request(method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        BASE + path,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, None


def _post(path, body):
    return _request("POST", path, body)


def _login(username, password):
    status, tokens = _post("/auth/login", {"username": username, "password": password})
    assert status == 200, f"login of {username}: {status}"
    return tokens["access_token"]


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/auth/(me|logout|logout-all|sessions|activity|password/change|email/verification)$")
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
        return _login(username, PASSWORD)

    def set(self, case, data, context):
        # Generation of security parameters is off (schemathesis.toml), so an Authorization
        # header already present was put there by an OpenAPI link: keep the linked token.
        headers = dict(case.headers or {})
        if not any(name.lower() == "authorization" for name in headers):
            headers["Authorization"] = f"Bearer {data}"
        case.headers = headers


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/admin/")
class AdminLogin:
    """A fresh login of the bootstrapped admin for every `/admin` request."""

    def get(self, case, context):
        return _login(ADMIN_USERNAME, ADMIN_PASSWORD)

    def set(self, case, data, context):
        FreshLogin.set(self, case, data, context)


_unique = itertools.count()
_protected_lock = threading.Lock()
_protected_ids = None


def _protected():
    """The ids of the accounts the hooks log in with: the admin and the two test accounts."""
    global _protected_ids
    with _protected_lock:
        if _protected_ids is None:
            ids = set()
            for username, password in [
                (ADMIN_USERNAME, ADMIN_PASSWORD),
                ("contract", PASSWORD),
                ("contract-all", PASSWORD),
            ]:
                if username != ADMIN_USERNAME:
                    account = {"email": f"{username}@example.com", "username": username, "password": password}
                    status, _ = _post("/auth/signup", account)
                    assert status in (201, 409), f"sign-up of {username}: {status}"
                    FreshLogin.signed_up.add(username)
                status, me = _request("GET", "/auth/me", token=_login(username, password))
                assert status == 200, f"/auth/me of {username}: {status}"
                ids.add(me["id"])
            _protected_ids = ids
        return _protected_ids


def _throwaway_id():
    """Signs up an account for one destructive admin call; its id."""
    name = f"throwaway{next(_unique):06d}"
    account = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    status, user = _post("/auth/signup", account)
    assert status == 201, f"sign-up of {name}: {status}"
    return user["id"]


def _protect_accounts(case):
    """Points a generated change to a protected account at a throwaway one (module comment)."""
    if not case.operation.path.startswith("/admin/users/{id}") or case.method.upper() == "GET":
        return
    params = case.path_parameters
    if not params or "id" not in params:
        return
    target = params["id"]
    if isinstance(target, str) and target.isascii() and target.isdigit():
        target = int(target)
    if not isinstance(target, int) or isinstance(target, bool):
        return  # not an id at all: a negative case, harmless as it is
    if target in _protected():
        params["id"] = _throwaway_id()


@schemathesis.hook
def before_call(context, case, kwargs):
    """Protects the hooks' accounts from admin changes, and makes a positive stateful sign-up's
    username and email unique (see the module comment)."""
    _protect_accounts(case)
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
