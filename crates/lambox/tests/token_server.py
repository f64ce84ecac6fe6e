#!/usr/bin/env python3
"""A tiny Docker registry token server, for the lambox integration tests only.

Implements the token flow of the Docker registry v2 auth spec: a client that got a
`WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge from the registry GETs
`/token?service=S&scope=repository:NAME:ACTIONS` here with Basic credentials and gets back
`{"token": JWT}` granting exactly the repository scopes it asked for. The JWT is RS256-signed with
`openssl dgst -sha256 -sign KEY` and carries the signing certificate in its `x5c` header,
which docker-registry (distribution 2.8) checks against its `rootcertbundle`.

Wrong credentials get 401; no credentials at all get a token that grants nothing (as Docker
Hub does), so the registry refuses the request itself. Each request is logged as one line to
LOG, `issued USER SCOPE...`, `issued <anonymous> SCOPE...` or `denied SCOPE...` (the test reads
it to know the token path was used).

Usage: token_server.py PORT USER PASSWORD KEY.pem CERT.pem ISSUER LOG

Python standard library only (plus the openssl CLI). Exits when killed, and also on its own
when its parent process goes away.
"""

import base64
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKEN_LIFETIME = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cert_der_b64(cert_path: str) -> str:
    """The base64 DER of the first certificate in a PEM file (what `x5c` wants)."""
    lines = []
    inside = False
    with open(cert_path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if line == "-----BEGIN CERTIFICATE-----":
                inside = True
            elif line == "-----END CERTIFICATE-----":
                break
            elif inside:
                lines.append(line)
    if not lines:
        raise SystemExit(f"no certificate in {cert_path}")
    return "".join(lines)


def parse_scope(scope: str):
    """`repository:NAME:pull,push` -> access entry, or None if it is not a repository scope.

    NAME may itself contain a colon (a registry host with a port), so split from both ends.
    """
    kind, sep, rest = scope.partition(":")
    if not sep:
        return None
    name, sep, actions = rest.rpartition(":")
    if not sep or not name or kind != "repository":
        return None
    return {
        "type": kind,
        "name": name,
        "actions": [a for a in actions.split(",") if a],
    }


class Config:
    def __init__(self, argv):
        if len(argv) != 8:
            raise SystemExit(
                "usage: token_server.py PORT USER PASSWORD KEY.pem CERT.pem ISSUER LOG"
            )
        self.port = int(argv[1])
        self.user = argv[2]
        self.password = argv[3]
        self.key = argv[4]
        self.x5c = cert_der_b64(argv[5])
        self.issuer = argv[6]
        self.log = argv[7]
        self.log_lock = threading.Lock()

    def sign(self, signing_input: bytes) -> bytes:
        out = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=signing_input,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                "openssl dgst failed: " + out.stderr.decode("utf-8", "replace")
            )
        return out.stdout

    def token(self, subject: str, service: str, access) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": service,
            "exp": now + TOKEN_LIFETIME,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.sign(signing_input.encode("ascii"))
        return signing_input + "." + b64url(signature)

    def check_basic(self, header) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        return (
            bool(sep)
            and hmac.compare_digest(user.encode(), self.user.encode())
            and hmac.compare_digest(password.encode(), self.password.encode())
        )

    def record(self, line: str):
        with self.log_lock:
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def make_handler(config: Config):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # keep the test output quiet
            pass

        def reply(self, status: int, body: dict, extra_headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra_headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path != "/token":
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
                return
            query = parse_qs(url.query)
            service = (query.get("service") or [""])[0]
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            authorization = self.headers.get("Authorization")
            if authorization is None:
                # Like Docker Hub and other token servers: anonymous clients get a token,
                # but one that grants nothing, so the registry still refuses them.
                subject, access = "", []
            elif config.check_basic(authorization):
                subject = config.user
                access = [a for a in map(parse_scope, scopes) if a is not None]
            else:
                config.record("denied " + " ".join(scopes))
                self.reply(
                    401,
                    {
                        "errors": [
                            {
                                "code": "UNAUTHORIZED",
                                "message": "invalid username or password",
                            }
                        ]
                    },
                    [("WWW-Authenticate", 'Basic realm="lambox-test"')],
                )
                return
            try:
                token = config.token(subject, service, access)
            except RuntimeError as e:
                self.reply(500, {"errors": [{"code": "UNKNOWN", "message": str(e)}]})
                return
            config.record(
                "issued " + (subject or "<anonymous>") + " " + " ".join(scopes)
            )
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.reply(
                200,
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": TOKEN_LIFETIME,
                    "issued_at": now,
                },
            )

    return Handler


def watch_parent():
    """Stop when the process that started us is gone (we then get reparented)."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main():
    config = Config(sys.argv)
    server = ThreadingHTTPServer(("127.0.0.1", config.port), make_handler(config))
    server.daemon_threads = True
    threading.Thread(target=watch_parent, daemon=True).start()
    # Tell the parent we are listening.
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
