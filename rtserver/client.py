"""A small asyncio client for protocol v1 (used by the load tester, tests and apps).

::

    async with await Client.connect("ws://127.0.0.1:8000/ws", encoding="msgpack") as c:
        turn = await c.ask("Write a haiku")
        print(turn.text, turn.done["stats"]["ttft_ms"])

``Client.connect`` opens the socket and, unless ``hello=False``, sends ``hello`` and
waits for the ``session`` frame. ``ask`` sends one message and collects its frames
until ``done``; ``stream`` yields them as they arrive.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect

_ids = itertools.count(1)


@dataclass
class Turn:
    """Everything the server sent for one message."""

    message_id: str
    route: dict[str, Any] | None = None
    tokens: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    sent_at: float = 0.0
    first_token_at: float | None = None
    token_times: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(t["text"] for t in self.tokens)

    @property
    def response_id(self) -> str | None:
        if self.route is not None:
            return str(self.route["response_id"])
        if self.done is not None:
            return str(self.done["response_id"])
        return None

    @property
    def seq_gaps(self) -> int:
        """Missing or out-of-order sequence numbers (must be 0)."""
        expected, gaps = 0, 0
        for t in self.tokens:
            if t["seq"] != expected:
                gaps += 1
            expected = int(t.get("seq_last", t["seq"])) + 1
        return gaps


class Client:
    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.session: dict[str, Any] | None = None
        self.pending: list[dict[str, Any]] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        encoding: str = "json",
        hello: bool | Mapping[str, Any] = True,
        open_timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        max_size: int | None = 16 * 1024 * 1024,
    ) -> Client:
        proto = {"json": "rt.v1.json", "msgpack": "rt.v1.msgpack"}[encoding]
        ws = await connect(
            url, subprotocols=[proto], open_timeout=open_timeout,  # type: ignore[list-item]
            additional_headers=dict(headers or {}), max_size=max_size, compression=None,
        )
        client = cls(ws, encoding)
        if hello is not False:
            body = dict(hello) if isinstance(hello, Mapping) else {}
            await client.send({"type": "hello", **body})
            early: list[dict[str, Any]] = []  # e.g. a failed resume's error, before the session frame
            while True:
                frame = await client.recv(open_timeout)
                if frame["type"] == "session":
                    client.session = frame
                    break
                if frame["type"] == "error" and frame.get("fatal"):
                    await ws.close()
                    raise ConnectionRefusedError(f"{frame['code']}: {frame['message']}")
                early.append(frame)
            client.pending = early
        return client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()

    # ------------------------------------------------------------------ frames
    async def send(self, frame: Mapping[str, Any]) -> None:
        if self.encoding == "json":
            await self.ws.send(orjson.dumps(frame).decode())
        else:
            await self.ws.send(msgpack.packb(frame, use_bin_type=True))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        if self.pending:
            return self.pending.pop(0)
        import asyncio

        data = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = orjson.loads(data) if isinstance(data, str) else msgpack.unpackb(data, raw=False)
        if not isinstance(frame, dict):
            raise ValueError("server sent a non-object frame")
        if frame.get("type") == "session" and self.session is None:
            self.session = frame
        return frame

    def attachment(self, kind: str, mime: str, data: bytes) -> dict[str, Any]:
        payload: Any = data if self.encoding == "msgpack" else base64.b64encode(data).decode()
        return {"kind": kind, "mime": mime, "data": payload}

    async def send_message(
        self,
        text: str,
        *,
        attachments: Sequence[Mapping[str, Any]] = (),
        context: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        mid = message_id or f"m{next(_ids)}"
        frame: dict[str, Any] = {"type": "message", "id": mid, "text": text}
        if attachments:
            frame["attachments"] = list(attachments)
        if context is not None:
            frame["context"] = dict(context)
        await self.send(frame)
        return mid

    async def cancel(self, response_id: str | None = None) -> None:
        await self.send({"type": "cancel", "response_id": response_id})

    async def stream(self, message_id: str, timeout: float = 120.0) -> AsyncIterator[dict[str, Any]]:
        """Frames answering ``message_id`` (route, tokens, errors) through its ``done``."""
        response_id: str | None = None
        while True:
            frame = await self.recv(timeout)
            kind = frame.get("type")
            if kind == "session":
                continue
            if kind == "route" and frame.get("message_id") == message_id:
                response_id = frame["response_id"]
            yield frame
            if kind == "done" and (response_id is None or frame["response_id"] == response_id):
                return
            if kind == "error" and frame.get("ref") == message_id and response_id is None and not frame.get(
                "response_id"
            ):
                return  # rejected before a response started

    async def ask(
        self,
        text: str,
        *,
        attachments: Sequence[Mapping[str, Any]] = (),
        context: Mapping[str, Any] | None = None,
        timeout: float = 120.0,
    ) -> Turn:
        sent = time.perf_counter()
        mid = await self.send_message(text, attachments=attachments, context=context)
        turn = Turn(message_id=mid, sent_at=sent)
        async for frame in self.stream(mid, timeout):
            collect(turn, frame, time.perf_counter())
        return turn


def collect(turn: Turn, frame: dict[str, Any], now: float) -> None:
    kind = frame.get("type")
    if kind == "route":
        turn.route = frame
    elif kind == "token":
        if turn.first_token_at is None:
            turn.first_token_at = now
        turn.token_times.append(now)
        turn.tokens.append(frame)
    elif kind == "done":
        turn.done = frame
    elif kind == "error":
        turn.errors.append(frame)
