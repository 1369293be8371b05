#!/usr/bin/env python3
"""A stand-in identity provider for trying examples/projects.toml on one machine: makes an
RSA signing key and the JWKS file the gateway reads (once, in --dir), then prints a signed
bearer token granting the projects named.

    python3 examples/mint-token.py --dir .testbed/tokens lung-screening
    python3 examples/mint-token.py --dir .testbed/tokens lung-screening oncology-trial --minutes 5

Needs the Python packages pyjwt and cryptography (scripts/install-deps.sh installs both). In
production tokens come from the federation's OpenID Connect provider, never from this script.
"""

import argparse
import json
import pathlib
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_ID = "example-1"


def signing_key(directory):
    """The key in `directory`, made (with its JWKS) the first time."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = directory / "signing-key.pem"
    if pem.exists():
        return serialization.load_pem_private_key(pem.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem.touch(mode=0o600)
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid=KEY_ID, use="sig", alg="RS256")
    (directory / "jwks.json").write_text(json.dumps({"keys": [public]}, indent=2) + "\n")
    print(f"made a signing key and {directory / 'jwks.json'}", file=sys.stderr)
    return key


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("projects", nargs="+", help="project ids the token grants")
    parser.add_argument("--dir", default=".testbed/tokens", help="where the key and jwks.json live")
    parser.add_argument("--subject", default="researcher@example.org")
    parser.add_argument("--issuer", default="https://login.example.org/realms/imaging")
    parser.add_argument("--audience", default="dicomweb-gateway")
    parser.add_argument("--minutes", type=int, default=60, help="lifetime of the token")
    parser.add_argument("--claim", default="projects", help="the claim naming them (EUCAIM's Keycloak: groups)")
    args = parser.parse_args()
    key = signing_key(pathlib.Path(args.dir))
    now = int(time.time())
    claims = {
        "iss": args.issuer,
        "aud": args.audience,
        "sub": args.subject,
        "iat": now,
        "exp": now + 60 * args.minutes,
        "jti": str(uuid.uuid4()),
        args.claim: args.projects,
    }
    print(jwt.encode(claims, key, algorithm="RS256", headers={"kid": KEY_ID}))


if __name__ == "__main__":
    main()
