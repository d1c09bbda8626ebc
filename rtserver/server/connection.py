"""One WebSocket: a thin asyncio shell around the pure protocol core.

The reader loop decodes and admits client frames (``Conversation``), the writer task
drains the bounded ``Outbox``; the response to a message runs in its own task owned
by the ``LiveSession`` (see live.py), so it survives a dropped socket for resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from rtserver.codes import CloseCode
from rtserver.exceptions import ProtocolError, RateLimited, RtServerError
from rtserver.protocol.codec import Encoding, decode_client_frame, encode_payload, error_frame, to_wire
from rtserver.protocol.conversation import Conversation
from rtserver.protocol.frames import Cancel, Hello, Message, Ping, Pong, Refresh
from rtserver.server.identity import SocketIdentity
from rtserver.server.outbox import Outbox, socket_backlog
from rtserver.server.ratelimit import TokenBucket

if TYPE_CHECKING:
    from rtserver.server.context import GatewayContext as Gateway
    from rtserver.server.live import LiveSession

log = logging.getLogger("rtserver.connection")


class Connection:
    def __init__(self, gw: Gateway, ws: ServerConnection, encoding: Encoding) -> None:
        self.gw = gw
        self.ws = ws
        self.encoding = encoding
        self.outbox = Outbox(gw.settings.outbox_frames, backlog=socket_backlog(ws.transport))
        self.conversation = Conversation()
        self.live: LiveSession | None = None
        self.errors = 0
        self._close: tuple[int, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.identity = SocketIdentity(self)  # who is on this socket (auth on), and until when
        self.query_token: str | None = None  # ?token= of the handshake, verified first thing in run()
        self._progress = time.monotonic()  # when the writer last finished a send
        self._backed_since: float | None = None  # since when the outbox is backed up

    @property
    def subject(self) -> str | None:
        """The authenticated subject (auth on), else None."""
        return self.identity.subject

    # ------------------------------------------------------------------ output
    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; never blocks. A full outbox closes the socket (slow consumer)."""
        if self._close is not None:
            return
        outbox = self.outbox
        stalled = False
        if outbox.backed_up:
            now = time.monotonic()
            if self._backed_since is None:
                self._backed_since = now
            stalled = now - max(self._backed_since, self._progress) > self.gw.settings.slow_consumer_timeout_s
        else:
            self._backed_since = None
        merged = outbox.coalesced
        if stalled or not outbox.put(frame):
            self.gw.metrics.outbox_drops.inc()
            self.close(CloseCode.SLOW_CONSUMER, "client is not reading fast enough")
        elif outbox.coalesced != merged:
            self.gw.metrics.coalesced.inc(outbox.coalesced - merged)

    def send_error(self, exc: RtServerError, *, fatal: bool = False) -> None:
        self.gw.metrics.errors.labels(exc.code.wire).inc()
        self.send(to_wire(error_frame(exc.code, exc.message, ref=exc.ref, fatal=fatal)))

    def close(self, code: int, reason: str) -> None:
        """Close after what is queued, except for a slow consumer (closed at once)."""
        if self._close is None:
            self._close = (code, reason)
            self.gw.metrics.closes.labels(CloseCode(code).name.lower() if code in CloseCode._value2member_map_
                                          else str(code)).inc()
            self.outbox.closed = True
            if code == CloseCode.SLOW_CONSUMER:
                # Stop generating for a reader that cannot keep up (no resume grace): the
                # frames so far stay in the replay log for a client that comes back.
                self.gw.cancel_response(self)
                self.outbox.drain_nowait()
                task = asyncio.get_running_loop().create_task(self._close_slow(code, reason))
                self.gw.track(task)
            else:
                self.outbox.put_control({"type": "__close__"})

    async def _close_slow(self, code: int, reason: str) -> None:
        """A client that does not read cannot take a close frame either: give the close
        handshake ``slow_consumer_timeout_s``, then drop the TCP connection."""
        if self._writer is not None:
            self._writer.cancel()  # it may be blocked in send() on the full socket
        try:
            await asyncio.wait_for(self.ws.close(code, reason), 1.0)
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            transport = self.ws.transport
            if transport is not None and not transport.is_closing():
                transport.abort()

    async def _write(self) -> None:
        """Send what the outbox holds, in order, several frames per socket write.

        After the first frame, wait ``write_delay_ms`` (0: not at all) for more, then take up
        to ``write_batch_frames`` queued frames and hand them to the transport as one write
        (each still its own WebSocket message). A close record ends the batch and the loop.
        """
        outbox, settings = self.outbox, self.gw.settings
        delay, most = settings.write_delay_ms / 1000.0, settings.write_batch_frames
        try:
            while True:
                batch = [await outbox.get()]
                if delay > 0 and batch[0].get("type") != "__close__" and len(outbox) < most - 1:
                    await asyncio.sleep(delay)
                batch += outbox.take_nowait(most - 1)
                if await self._send_batch(batch):
                    return
                # An idle writer holds nothing it sent (bench/idle_conns.py: KBs per idle socket).
                del batch
        except ConnectionClosed:
            pass

    async def _send_batch(self, batch: list[dict[str, Any]]) -> bool:
        """Encode and send ``batch`` in one write; True when it ended with the close record."""
        payloads: list[bytes] = []
        closing = False
        for frame in batch:
            if frame.get("type") == "__close__":
                closing = True
                break
            payloads.append(encode_payload(frame, self.encoding))
        await self._send_all(payloads, self.encoding == "json")
        if payloads:
            self._progress = time.monotonic()
            self.gw.metrics.write_frames.observe(len(payloads))
        if closing:
            assert self._close is not None
            await self.ws.close(*self._close)
        return closing

    async def _send_all(self, payloads: list[bytes], text: bool) -> None:
        """``payloads`` as consecutive WebSocket messages in one transport write."""
        ws = self.ws
        if len(payloads) <= 1:
            if payloads:
                await ws.send(payloads[0], text=text)
            return
        async with ws.send_context():  # flushes (and drains) on exit, or raises ConnectionClosed
            protocol = ws.protocol
            for payload in payloads:
                if text:
                    protocol.send_text(payload)
                else:
                    protocol.send_binary(payload)
            # Sending data frames while open never yields b"" (websockets' half-close marker).
            ws.transport.write(b"".join(protocol.data_to_send()))

    # ------------------------------------------------------------------ input
    async def run(self) -> None:
        gw, settings = self.gw, self.gw.settings
        limits = gw.limits
        bucket = TokenBucket(settings.messages_per_second, settings.message_burst, time.monotonic())
        self._writer = asyncio.create_task(self._write())
        try:
            if self.query_token is not None and self._close is None:
                await self.identity.authenticate(self.query_token)
            last_in = time.monotonic()
            while self._close is None:
                # Idle: no client frame, no response running and nothing sent for idle_timeout_s.
                wait = settings.idle_timeout_s - (time.monotonic() - max(last_in, self._progress))
                try:
                    data = await asyncio.wait_for(self.ws.recv(), max(wait, 0.01))
                except TimeoutError:
                    idle_for = time.monotonic() - max(last_in, self._progress)
                    if self.conversation.active_response is None and idle_for >= settings.idle_timeout_s:
                        self.close(CloseCode.IDLE_TIMEOUT, "idle timeout")
                        break
                    if self.conversation.active_response is not None:
                        last_in = time.monotonic()  # a response is running: activity
                    continue
                last_in = time.monotonic()
                received = time.perf_counter()
                if gw.verifier is not None and self.subject is None and not await self.identity.first_frame(data):
                    break
                if not bucket.take(time.monotonic()):
                    # answered, but not an invalid frame: it does not count toward max_errors
                    self.send_error(RateLimited("too many frames; slow down"))
                    continue
                try:
                    frame = decode_client_frame(data, self.encoding, limits)
                    self.conversation.admit(frame)
                except ProtocolError as exc:
                    self._reject(exc)
                    continue
                if isinstance(frame, Ping):
                    await self._ensure_session(None)
                    self.send(to_wire(Pong(t=frame.t)))
                elif isinstance(frame, Hello):
                    await self._ensure_session(frame)
                elif isinstance(frame, Message):
                    await self._ensure_session(None)
                    if self.live is not None:
                        await gw.start_response(self, frame, received)
                elif isinstance(frame, Cancel):
                    gw.cancel_response(self)
                elif isinstance(frame, Refresh):
                    await self.identity.refresh(frame)
        except ConnectionClosed:
            pass
        finally:
            await self._shutdown()

    def refuse(self, exc: RtServerError) -> None:
        """A fatal error frame, then close with the error's close code."""
        assert exc.close is not None, f"{type(exc).__name__} has no close code"
        self.send_error(exc, fatal=True)
        self.close(exc.close, exc.message[:120])

    def _reject(self, exc: ProtocolError) -> None:
        self.errors += 1
        self.send_error(exc)
        if self.errors >= self.gw.settings.max_errors:
            self.close(CloseCode.TOO_MANY_ERRORS, "too many invalid frames")

    async def _ensure_session(self, hello: Hello | None) -> None:
        if not self.conversation.needs_session:
            return
        self.live = await self.gw.open_session(self, hello)
        self.conversation.opened()

    async def _discard_input(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.ws:
                pass

    async def _shutdown(self) -> None:
        self.identity.cancel_timers()
        if self.live is not None:
            self.gw.detach(self)
        if self._writer is not None:
            if self._close is not None and not self._writer.done():
                # Keep reading (and discarding) so the client's close reply is seen behind
                # any frames it sent meanwhile; otherwise the handshake waits for close_timeout.
                drain = asyncio.create_task(self._discard_input())
                with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
                    await asyncio.wait_for(asyncio.shield(self._writer), 5.0)
                drain.cancel()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self._writer
        self._closed.set()
