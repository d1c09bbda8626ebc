"""Plain HTTP routes served on the WebSocket port: /, static widget files, /metrics,
/healthz (process alive) and /readyz (able to serve a conversation now)."""

from __future__ import annotations

import json
import mimetypes
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from rtserver.server.context import GatewayContext as Gateway

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


def response(status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status.value, status.phrase, headers, body)


def json_response(status: HTTPStatus, obj: object) -> Response:
    return response(status, json.dumps(obj).encode(), "application/json")


def serve_http(gw: Gateway, request: Request) -> Response | None:
    """The response for a plain HTTP request, or None to go on with a WebSocket upgrade."""
    path = request.path.split("?", 1)[0]
    if path == "/ws":
        return None
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return response(HTTPStatus.NOT_FOUND, b"WebSocket endpoint is /ws\n", "text/plain")
    if path == "/metrics":
        return response(HTTPStatus.OK, gw.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
    if path == "/healthz":
        return json_response(HTTPStatus.OK, {"status": "ok"})
    if path == "/readyz":
        report = gw.readiness()
        status = HTTPStatus.OK if report["status"] in ("ready", "degraded") else HTTPStatus.SERVICE_UNAVAILABLE
        return json_response(status, report)
    return _static(gw.web_root, path)


def _static(root: Path, path: str) -> Response:
    if path in ("", "/"):
        path = "/index.html"
    target = (root / path.lstrip("/")).resolve()
    if not target.is_relative_to(root.resolve()) or not target.is_file():
        return response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
    ctype = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return response(HTTPStatus.OK, target.read_bytes(), ctype)
