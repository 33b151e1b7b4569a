#!/usr/bin/env python3
"""Verify a cerego access token as another service would: with PyJWT, knowing only the
discovery URL of the service that issued it.

usage: verify_with_pyjwt.py DISCOVERY_URL TOKEN

Fetches the OpenID discovery document, takes its `jwks_uri` and signing algorithms, lets
`jwt.PyJWKClient` find the key the token's `kid` names, and verifies the token with it.

Exit 0 and one JSON line on standard output ({"sub", "kid", "alg", "pyjwt"}) when the token
verifies; exit 1 and a line starting "rejected:" on standard error when PyJWT refuses it;
exit 3 when PyJWT is missing; any other failure (the service unreachable, a malformed
document) is a traceback and exit code of Python's own.
"""

import json
import sys
import urllib.request

try:
    import jwt
except ImportError as err:  # the caller skips (locally) or fails (CI) on this exit code
    print(f"PyJWT is not installed: {err}", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    discovery_url, token = sys.argv[1], sys.argv[2]
    with urllib.request.urlopen(discovery_url, timeout=30) as response:
        discovery = json.load(response)
    jwks_uri = discovery["jwks_uri"]
    algorithms = discovery["id_token_signing_alg_values_supported"]
    client = jwt.PyJWKClient(jwks_uri, cache_keys=False, timeout=30)
    try:
        signing_key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=algorithms,
            issuer=discovery["issuer"],
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.PyJWTError as err:
        print(f"rejected: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    header = jwt.get_unverified_header(token)
    print(
        json.dumps(
            {
                "sub": claims["sub"],
                "kid": signing_key.key_id,
                "alg": header["alg"],
                "pyjwt": jwt.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
