"""Accepting a WebSocket: subprotocol, admission (origin, per-address limit, token in
the query), the client's address behind trusted proxies, and the socket's lifetime."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import NegotiationError
from websockets.typing import Subprotocol

from rtserver.exceptions import OriginNotAllowed, Refused, TooManyConnections
from rtserver.protocol.codec import SUBPROTOCOLS
from rtserver.server.connection import Connection

if TYPE_CHECKING:
    from rtserver.server.context import GatewayContext as Gateway


async def handle(gw: Gateway, ws: ServerConnection) -> None:
    """One socket, from admission to its last frame."""
    encoding = SUBPROTOCOLS.get(ws.subprotocol or "", "json")
    conn = Connection(gw, ws, encoding)
    ip = client_ip(gw, ws)
    counts = gw.ip_counts
    gw.conns.add(conn)
    counts[ip] = counts.get(ip, 0) + 1
    gw.metrics.connections.inc()
    gw.metrics.connections_total.labels(encoding).inc()
    try:
        refusal = _admission(gw, ws, ip, conn)
        if refusal is not None:
            conn.refuse(refusal)
        await conn.run()
    finally:
        gw.conns.discard(conn)
        left = counts.get(ip, 1) - 1
        if left > 0:
            counts[ip] = left
        else:
            counts.pop(ip, None)
        gw.metrics.connections.dec()


def client_ip(gw: Gateway, ws: ServerConnection) -> str:
    """The peer address, or the client a trusted proxy forwarded (X-Real-IP, else the
    last X-Forwarded-For hop)."""
    peer = str(ws.remote_address[0]) if ws.remote_address else "?"
    if not gw.proxies or ws.request is None:
        return peer
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if not any(addr in net for net in gw.proxies):
        return peer
    headers = ws.request.headers
    forwarded = headers.get("X-Real-IP") or headers.get("X-Forwarded-For", "").split(",")[-1]
    return forwarded.strip()[:64] or peer


def _admission(gw: Gateway, ws: ServerConnection, ip: str, conn: Connection) -> Refused | None:
    """Checks at connect time; a refusal is sent as a fatal error frame plus a 4xxx close,
    which (unlike an HTTP status on a failed handshake) a browser can read."""
    s = gw.settings
    origins = s.allowed_origins
    origin = ws.request.headers.get("Origin") if ws.request is not None else None
    if origins and "*" not in origins and origin is not None and origin not in origins:
        return OriginNotAllowed(f"origin {origin[:100]} is not allowed")
    if gw.ip_counts.get(ip, 0) > s.max_connections_per_ip:
        return TooManyConnections(f"more than {s.max_connections_per_ip} connections from one address")
    if gw.verifier is not None:
        conn.query_token = query_token(ws.request.path if ws.request is not None else "")  # verified in run()
    return None


def query_token(path: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def select_subprotocol(ws: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
    """JSON when the client offers nothing; the first known one it offers; else refuse (400)."""
    if not offered:
        return None
    for proto in offered:
        if proto in SUBPROTOCOLS:
            return Subprotocol(proto)
    raise NegotiationError(f"unsupported subprotocols {', '.join(offered)[:200]}; use rt.v1.json or rt.v1.msgpack")
