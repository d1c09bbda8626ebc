"""Opening a conversation on a socket: a new session, or a resume with a rotated token.

A resume is checked whole (token, subject, a token another resume spent first)
before anything is registered or replaced, so a refused resume leaves no trace.
The token rotates on every resume through the store's compare-and-set, so of two
resumes with one token, on any gateways, exactly one wins.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from rtserver.codes import CloseCode
from rtserver.exceptions import SessionError, StoreError, Unauthorized
from rtserver.protocol import events as ev
from rtserver.protocol.codec import to_wire
from rtserver.protocol.frames import Hello, SessionInfo
from rtserver.server.follow import replay_response
from rtserver.server.live import LiveSession
from rtserver.server.turn import apply
from rtserver.sessions.base import Session, new_resume_token, new_session_id, token_digest

if TYPE_CHECKING:
    from rtserver.server.connection import Connection
    from rtserver.server.context import GatewayContext as Gateway

log = logging.getLogger("rtserver.gateway")


async def open_session(gw: Gateway, conn: Connection, hello: Hello | None) -> LiveSession:
    """Resume ``hello``'s session or create one; sends the ``session`` frame."""
    live: LiveSession | None = None
    token = new_resume_token()  # the token rotates on every resume
    if hello is not None and hello.session_id:
        try:
            live = await _resume(gw, hello, conn.subject, token_digest(token))
        except (SessionError, StoreError) as exc:
            gw.metrics.resumes.labels(exc.code.wire).inc()
            conn.send_error(exc)
    resumed = live is not None
    if live is None:
        session = Session(session_id=new_session_id(), token_digest=token_digest(token),
                          client=hello.client if hello else None, subject=conn.subject)
        live = gw.register(session)
        gw.metrics.session_creations.inc()
    else:
        gw.metrics.resumes.labels("ok").inc()
    _attach(live, conn)
    apply(gw, live, live.machine.handle(ev.Attached(time.time())))
    route = None
    if live.route is not None:
        route = {"use_case": live.route.use_case, "model": live.route.model_id, "worker": live.session.worker}
    conn.send(to_wire(SessionInfo(
        session_id=live.session_id, resume_token=token, resumed=resumed, limits=gw.limits.as_wire(), route=route,
    )))
    if resumed and hello is not None and hello.response_id is not None:
        replay_response(gw, conn, live, hello.response_id, -1 if hello.last_seq is None else hello.last_seq)
    elif live.machine.active is not None:
        conn.conversation.start_response(live.machine.active.log.response_id)
    return live


def _attach(live: LiveSession, conn: Connection | None) -> None:
    """``conn`` takes the session over (None: nobody does, our copy is dropped): another socket
    holding it is closed with ``session_replaced``, and the grace timer is stopped."""
    old = live.conn
    if old is not None and old is not conn:
        old.live = None
        old.close(CloseCode.SESSION_REPLACED, "session resumed on another socket")
    if live.detach_timer is not None:
        live.detach_timer.cancel()
        live.detach_timer = None
    live.conn = conn


async def _resume(gw: Gateway, hello: Hello, subject: str | None, new_digest: str) -> LiveSession:
    """The live session ``hello`` resumes, its token rotated to ``new_digest``."""
    assert hello.session_id is not None
    live = gw.live.get(hello.session_id)
    token = hello.resume_token or ""
    if live is not None and live.session.token_matches(token) and (live.conn is not None or live.streaming):
        _check_subject(gw, live.session, subject)
        await _rotate(gw, live.session, token_digest(token), new_digest, ours=True)
        return live  # attached or streaming here: our copy is the newest
    session = await _load(gw, hello.session_id, live, token)
    if not token or not session.token_matches(token):
        raise Unauthorized("resume token does not match")
    _check_subject(gw, session, subject)
    ours = live is not None and live.session is session
    await _rotate(gw, session, token_digest(token), new_digest, ours=ours)
    if live is not None and ours:
        return live
    if live is not None:  # the conversation moved on on another gateway: drop our copy
        _attach(live, None)
    live = gw.register(session)
    if session.route:
        from rtserver.routing.router import InvalidRouteState, RouteState

        try:
            live.route = RouteState.from_dict(session.route)
        except InvalidRouteState:
            log.warning("session %s has an unreadable route; routing it afresh", session.session_id[:8])
    return live


def _check_subject(gw: Gateway, session: Session, subject: str | None) -> None:
    if gw.verifier is not None and session.subject != subject:
        raise Unauthorized("this session belongs to another user")


async def _load(gw: Gateway, session_id: str, live: LiveSession | None, token: str) -> Session:
    """The newest copy of the session: the store's, or ours where ours is at least as new
    (our writes may be queued) or the store is down."""
    assert gw.store is not None and gw.writer is not None
    t0 = time.perf_counter()
    try:
        session = await gw.store.load(session_id)
        gw.metrics.store_seconds.labels("load").observe(time.perf_counter() - t0)
    except (StoreError, SessionError) as exc:
        # Our detached copy stands in while the store is down or has not got our writes yet.
        idle = time.time() - live.session.last_accessed if live is not None else 0.0
        if live is None or (isinstance(exc, SessionError) and idle > gw.settings.session_ttl_s):
            raise
        return live.session
    if live is None or session is live.session:
        return session
    if session.token_digest == live.session.token_digest:
        return live.session  # still ours: our copy is at least as new (writes may be queued)
    if live.session.token_matches(token) and not session.token_matches(token):
        # Either our token rotation is still queued, or the client resumed elsewhere
        # since and this token is stale: let our queued writes land, then look again.
        if not await gw.writer.flush(0.5):
            return live.session  # the store is behind (outage, backlog): trust our copy
        with contextlib.suppress(StoreError, SessionError):
            session = await gw.store.load(session_id)
        if session.token_digest == live.session.token_digest:
            return live.session
    return session


async def _rotate(gw: Gateway, session: Session, old_digest: str, new_digest: str, *, ours: bool) -> None:
    """Spend the presented token: the store's compare-and-set from ``old_digest`` to
    ``new_digest``. While the store is down, our own copy (``ours``) stands in."""
    assert gw.store is not None
    rotated = Session.from_dict(session.to_dict())
    rotated.token_digest = new_digest
    rotated.last_accessed = time.time()
    try:
        won = await gw.store.rotate(rotated, old_digest)
    except StoreError:
        if not ours:
            raise
        won = True  # the rotation reaches the store with our next (queued) save
    if not won:
        raise Unauthorized("resume token already used: the session was resumed with it elsewhere")
    session.token_digest = new_digest
