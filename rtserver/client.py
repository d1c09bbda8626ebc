"""A small asyncio client for protocol v1 (used by the load tester, tests and apps).

::

    async with await Client.connect("ws://127.0.0.1:8000/ws", encoding="msgpack") as c:
        turn = await c.ask("Write a haiku")
        print(turn.text, turn.done["stats"]["ttft_ms"])

``Client.connect`` opens the socket and, unless ``hello=False``, sends ``hello`` and
waits for the ``session`` frame. ``ask`` sends one message and collects its frames
until ``done``; ``stream`` yields them as they arrive.

``ResilientClient`` is a whole conversation instead of one socket: it reconnects with
backoff and jitter, resumes a streaming answer with ``last_seq`` (no lost or repeated
token), moves to the next gateway on a restart and refreshes its token through a
``get_token`` callback, like the JavaScript ``rtclient`` (docs/clients.md).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
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


# ---------------------------------------------------------------------------- resilient
_AUTH_CLOSES = frozenset({4001, 4005})  # unauthorized, token expired: new token, reconnect
_FINAL_CLOSES = frozenset({4004})  # origin not allowed: retrying cannot help
_MAX_AUTH_FAILURES = 3
_RESUME_ERRORS = frozenset({"session_not_found", "session_expired", "unauthorized", "store_unavailable"})


class ClientError(Exception):
    """Why a reply or the connection ended: a server error ``code`` (docs/protocol.md) or
    the client's own: ``closed``, ``interrupted`` (send again), ``session_lost``,
    ``session_replaced``, ``refused``, ``unauthorized``, ``busy``."""

    def __init__(self, code: str, message: str = "", *, retryable: bool = False,
                 frame: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retryable = retryable
        self.frame = frame


def backoff_delay(attempt: int, base_s: float = 0.5, cap_s: float = 15.0, rand: float | None = None) -> float:
    """Exponential backoff with "equal jitter": half to all of min(cap, base * 2^attempt)."""
    import random

    ceiling = min(cap_s, base_s * 2**attempt)
    return float(ceiling / 2 + (random.random() if rand is None else rand) * ceiling / 2)


class Reply:
    """One message's answer: ``async for token in reply`` yields each token frame once,
    in order, across reconnects; ``route`` and ``done`` are the frames once they came."""

    def __init__(self, message_id: str, frame: dict[str, Any]) -> None:
        import asyncio

        self.message_id = message_id
        self.frame = frame
        self.response_id: str | None = None
        self.route: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None
        self.error: ClientError | None = None
        self.last_seq = -1
        self.tokens: list[dict[str, Any]] = []
        self.sent = False
        self.cancel_requested = False
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._finished = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def text(self) -> str:
        return "".join(t["text"] for t in self.tokens)

    def _token(self, frame: dict[str, Any]) -> None:
        self.tokens.append(frame)
        self._queue.put_nowait(frame)

    def _finish(self, done: dict[str, Any] | None, error: ClientError | None = None) -> None:
        if self.finished:
            return
        self.done, self.error = done, error
        self._finished.set()
        self._queue.put_nowait(None)

    async def wait(self) -> dict[str, Any]:
        """The ``done`` frame; raises the ``ClientError`` that ended the reply instead."""
        await self._finished.wait()
        if self.error is not None:
            raise self.error
        assert self.done is not None
        return self.done

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self._queue.get()
            if item is None:
                if self.error is not None:
                    raise self.error
                return
            yield item


class ResilientClient:
    """A conversation that survives dropped sockets, gateway restarts and token expiry;
    the Python twin of the JavaScript ``rtclient`` (docs/clients.md).

    ``urls`` are tried in turn when a gateway restarts (1012) or cannot be reached.
    ``get_token`` (async, returns a connection token) is called for every new socket and
    on ``token_expiring`` (the result goes out as ``refresh``).
    ``connect()`` returns the first ``session`` frame; ``send()`` a :class:`Reply`.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        encoding: str = "json",
        get_token: Callable[[], Awaitable[str]] | None = None,
        session: Mapping[str, str] | None = None,
        client_name: str = "rtserver.client",
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 15.0,
        open_timeout: float = 10.0,
    ) -> None:
        import asyncio

        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.encoding = encoding
        self.get_token = get_token
        self.session: dict[str, str] | None = dict(session) if session else None
        self.client_name = client_name
        self.backoff = (backoff_base_s, backoff_cap_s)
        self.open_timeout = open_timeout
        self.url_index = 0
        self.state = "idle"
        self.reconnects = 0
        self.refreshes = 0
        self.closes: list[int] = []
        self.reply: Reply | None = None
        self.ws: ClientConnection | None = None
        self._token: str | None = None
        self._opens = 0
        self._closing = False
        self._resuming = False
        self._resume_error: str | None = None
        self._fatal: ClientError | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._open = asyncio.Event()

    @property
    def url(self) -> str:
        return self.urls[self.url_index % len(self.urls)]

    async def __aenter__(self) -> ResilientClient:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> dict[str, Any]:
        import asyncio

        if self._task is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run())
        assert self._ready is not None
        return await asyncio.shield(self._ready)

    async def send(self, text: str, *, attachments: Sequence[Mapping[str, Any]] = (),
                   context: Mapping[str, Any] | None = None) -> Reply:
        if self.reply is not None and not self.reply.finished:
            raise ClientError("busy", "an answer is still streaming; cancel it first")
        if self.state in ("closed", "failed"):
            raise ClientError("closed", "the client is closed")
        mid = f"m{next(_ids)}"
        frame: dict[str, Any] = {"type": "message", "id": mid, "text": text}
        if attachments:
            frame["attachments"] = [
                {**a, "data": a["data"] if self.encoding == "msgpack" or isinstance(a["data"], str)
                 else base64.b64encode(a["data"]).decode()} for a in attachments
            ]
        if context is not None:
            frame["context"] = dict(context)
        reply = Reply(mid, frame)
        self.reply = reply
        if self.state == "open":
            await self._send_message(reply)
        elif self._task is None:
            await self.connect()
        return reply

    async def cancel(self) -> None:
        reply = self.reply
        if reply is None or reply.finished:
            return
        reply.cancel_requested = True
        if not reply.sent:
            reply._finish(None, ClientError("cancelled", "cancelled before it was sent"))
        elif reply.response_id is not None:
            await self._send({"type": "cancel", "response_id": reply.response_id})

    async def close(self) -> None:
        import asyncio

        self._closing = True
        self.state = "closed"
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_reply(ClientError("closed", "the client was closed"))

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        import asyncio

        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        attempt = 0
        auth_failures = 0
        while not self._closing:
            self.state = "reconnecting" if self._opens else "connecting"
            if self.get_token is not None:  # a fresh token for every socket
                try:
                    self._token = await self.get_token()
                except Exception:  # the app's callback failed: try again later
                    await asyncio.sleep(backoff_delay(attempt, *self.backoff))
                    attempt += 1
                    continue
            proto = {"json": "rt.v1.json", "msgpack": "rt.v1.msgpack"}[self.encoding]
            try:
                ws = await connect(self.url, subprotocols=[proto], open_timeout=self.open_timeout,  # type: ignore[list-item]
                                   compression=None, max_size=16 * 1024 * 1024)
            except (OSError, InvalidHandshake, TimeoutError):
                self.url_index += 1
                await asyncio.sleep(backoff_delay(attempt, *self.backoff))
                attempt += 1
                continue
            self.ws = ws
            self._opens += 1
            await self._hello()
            try:
                async for data in ws:
                    frame = orjson.loads(data) if isinstance(data, str) else msgpack.unpackb(data, raw=False)
                    if isinstance(frame, dict):
                        if frame.get("type") == "session":
                            attempt = 0
                            auth_failures = 0
                        await self._on_frame(frame)
            except ConnectionClosed:
                pass
            code = ws.close_code or 1006
            self.ws = None
            self.state = "reconnecting"
            self.closes.append(code)
            if self._closing:
                return
            if code == 4010:
                self.session = None
                return self._fail(ClientError("session_replaced", "resumed on another connection"))
            if code in _FINAL_CLOSES:
                return self._fail(self._fatal or ClientError("refused", f"close {code}"))
            soon = code == 1012
            if code in _AUTH_CLOSES:
                if self.get_token is None:
                    return self._fail(self._fatal or ClientError("unauthorized", f"close {code}"))
                soon = True
                if code == 4001:
                    auth_failures += 1
                    if auth_failures >= _MAX_AUTH_FAILURES:
                        return self._fail(self._fatal or ClientError("unauthorized", "every token was refused"))
            if code == 1012:
                self.url_index += 1
            await asyncio.sleep(0.05 if soon else backoff_delay(attempt, *self.backoff))
            attempt += 1

    def _fail(self, error: ClientError) -> None:
        self.state = "failed"
        self._fail_reply(error)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)

    def _fail_reply(self, error: ClientError) -> None:
        if self.reply is not None:
            self.reply._finish(None, error)

    async def _send(self, frame: Mapping[str, Any]) -> bool:
        from websockets.exceptions import ConnectionClosed

        ws = self.ws
        if ws is None:
            return False
        try:
            await ws.send(orjson.dumps(frame).decode() if self.encoding == "json"
                          else msgpack.packb(frame, use_bin_type=True))
        except ConnectionClosed:
            return False
        return True

    async def _send_message(self, reply: Reply) -> None:
        if await self._send(reply.frame):
            reply.sent = True

    async def _hello(self) -> None:
        hello: dict[str, Any] = {"type": "hello", "client": self.client_name}
        if self._token is not None:
            hello["auth"] = self._token
        self._resuming = self.session is not None
        self._resume_error = None
        self._fatal = None
        if self.session is not None:
            hello["session_id"] = self.session["session_id"]
            hello["resume_token"] = self.session["resume_token"]
            r = self.reply
            if r is not None and not r.finished and r.response_id is not None:
                hello["response_id"] = r.response_id
                hello["last_seq"] = r.last_seq
        await self._send(hello)

    # ------------------------------------------------------------------ frames
    async def _on_frame(self, f: dict[str, Any]) -> None:
        import asyncio

        kind = f.get("type")
        r = self.reply
        if kind == "session":
            lost = self._resuming and not f.get("resumed")
            resumed = self._resuming and bool(f.get("resumed"))
            self._resuming = False
            self.session = {"session_id": f["session_id"], "resume_token": f["resume_token"]}
            if self._opens > 1:
                self.reconnects += 1
            self.state = "open"
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(f)
            if r is not None and not r.finished:
                if not r.sent:
                    await self._send_message(r)
                elif lost:
                    r._finish(None, ClientError("session_lost", self._resume_error or "", retryable=True))
                elif resumed and r.response_id is None:
                    r._finish(None, ClientError("interrupted", "dropped before the answer started; send it again",
                                                retryable=True))
                elif r.cancel_requested and r.response_id is not None:  # cancel() while the socket was down
                    await self._send({"type": "cancel", "response_id": r.response_id})
        elif kind == "route":
            if r is not None and not r.finished and f.get("message_id") == r.message_id:
                r.response_id, r.route = f["response_id"], f
                if r.cancel_requested:
                    await self._send({"type": "cancel", "response_id": r.response_id})
        elif kind == "token":
            if r is None or r.finished or f.get("response_id") != r.response_id:
                return
            last = int(f.get("seq_last", f["seq"]))
            if last <= r.last_seq:
                return  # already had it
            r.last_seq = last
            r._token(f)
        elif kind == "done":
            if r is not None and f.get("response_id") == r.response_id:
                r._finish(f)
        elif kind == "error":
            err = ClientError(str(f.get("code")), str(f.get("message", "")), retryable=bool(f.get("retryable")), frame=f)
            if f.get("fatal"):
                self._fatal = err
            if self._resuming and f.get("code") in _RESUME_ERRORS and not f.get("fatal"):
                self._resume_error = str(f["code"])
                return
            if r is None or r.finished:
                return
            if f.get("code") == "recovery_impossible" or (
                f.get("ref") == r.message_id and r.response_id is None and f.get("code") != "attachment_unsupported"
            ):
                r._finish(None, err)
        elif kind == "token_expiring" and self.get_token is not None:
            asyncio.create_task(self._refresh())  # noqa: RUF006 (short; the socket's reader must not wait on it)

    async def _refresh(self) -> None:
        if self.get_token is None:
            return
        try:
            self._token = await self.get_token()
        except Exception:
            return
        if await self._send({"type": "refresh", "auth": self._token}):
            self.refreshes += 1
