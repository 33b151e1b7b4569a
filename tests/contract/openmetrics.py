"""Parses cerego's /metrics with the Prometheus project's own OpenMetrics parser.

Usage: python3 tests/contract/openmetrics.py http://127.0.0.1:PORT

Drives a little traffic first (a sign-up, a login, made-up methods), then checks the media type,
that the body parses as OpenMetrics 1.0, that each family has its declared type with the sample
names the type implies, and that no made-up method became a label value.
"""

import json
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

BASE = sys.argv[1].rstrip("/")
MEDIA_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
STANDARD = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"}
EXPECTED = {
    "cerego_http_requests": ("counter", "cerego_http_requests_total"),
    "cerego_http_request_duration_seconds": ("histogram", "cerego_http_request_duration_seconds_bucket"),
    "cerego_logins": ("counter", "cerego_logins_total"),
    "cerego_password_hash_duration_seconds": ("histogram", "cerego_password_hash_duration_seconds_count"),
    "cerego_password_hash_rejected": ("counter", "cerego_password_hash_rejected_total"),
    "cerego_db_pool_connections": ("gauge", "cerego_db_pool_connections"),
    "cerego_build_info": ("gauge", "cerego_build_info"),
}


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def main():
    user = {"email": "metrics@example.com", "username": "metrics", "password": "a long enough pass phrase"}
    call("POST", "/auth/signup", user)
    status, _, _ = call("POST", "/auth/login", {"username": "metrics", "password": user["password"]})
    assert status == 200, f"login: {status}"
    for n in range(5):
        call(f"FOO{n}", "/healthz")

    status, headers, text = call("GET", "/metrics")
    assert status == 200, status
    assert headers["Content-Type"] == MEDIA_TYPE, headers["Content-Type"]
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, (kind, sample) in EXPECTED.items():
        assert name in families, f"missing family {name}; have {sorted(families)}"
        family = families[name]
        assert family.type == kind, f"{name} is a {family.type}, not a {kind}"
        names = {s.name for s in family.samples}
        assert sample in names, f"{name} has samples {sorted(names)}, not {sample}"
    requests = families["cerego_http_requests"].samples
    methods = {s.labels["method"] for s in requests}
    assert methods <= STANDARD, f"methods outside the standard set: {methods - STANDARD}"
    other = sum(s.value for s in requests if s.labels["method"] == "OTHER")
    assert other >= 5, f"made-up methods counted under OTHER: {other}"
    logins = {s.labels["outcome"]: s.value for s in families["cerego_logins"].samples}
    assert logins.get("success", 0) >= 1, logins
    print(f"OpenMetrics: {len(families)} families parsed, {sum(len(f.samples) for f in families.values())} samples, types as declared")


if __name__ == "__main__":
    main()
