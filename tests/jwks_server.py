"""An identity provider's JWKS document served on loopback, for auth tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt


class JwksServer:
    """A JWKS document served on loopback; ``keys`` may change (rotation); counts GETs."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.gets = 0
        self.fail = False
        self.gate: threading.Event | None = None  # set: each GET waits until it is set (at most 10 s)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.gets += 1
                if outer.gate is not None:
                    outer.gate.wait(10)
                if outer.fail:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, private: Any, kid: str, alg: str) -> None:
        jwk = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(private.public_key()))
        self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
