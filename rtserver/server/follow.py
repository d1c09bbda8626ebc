"""Resuming a response: replay what this gateway kept, or follow another gateway's replay log.

The decisions (which frames, whether they are contiguous, where a gap is) are the
pure replay cursor's (rtserver/protocol/replay.py); this module reads the store and
writes the socket.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from rtserver.exceptions import RecoveryImpossible, StoreError
from rtserver.protocol import replay
from rtserver.server.live import LiveSession
from rtserver.server.turn import apply

if TYPE_CHECKING:
    from rtserver.server.connection import Connection
    from rtserver.server.context import GatewayContext as Gateway

FOLLOW_STALL_S = 30.0  # a followed remote response whose log stops growing this long is given up
POLL_S = 0.05


def replay_response(gw: Gateway, conn: Connection, live: LiveSession, response_id: str, last_seq: int) -> None:
    """Send the frames of ``response_id`` after ``last_seq``, then the live rest."""
    plan = replay.plan(live.machine, response_id, last_seq)
    if plan.error is not None:
        conn.send_error(plan.error)
        return
    if not plan.remote:
        for f in plan.frames:
            conn.send(f)
        gw.metrics.replayed_frames.inc(len(plan.frames))
        if plan.streaming:
            conn.conversation.start_response(response_id)
        return
    # The response lives (or lived) on another gateway: follow its replay log.
    conn.conversation.start_response(response_id)
    gw.track(asyncio.create_task(_follow_remote(gw, conn, live, response_id, last_seq)))


async def _follow_remote(gw: Gateway, conn: Connection, live: LiveSession, response_id: str, last_seq: int) -> None:
    """Relay the replay log of a response streamed by another gateway, exactly once, through ``done``.

    Gives up with ``recovery_impossible`` when the log is gone, has a gap, or stops
    growing for ``FOLLOW_STALL_S`` (its gateway died). A log not written yet is
    waited for while the session says that response is still running.
    """
    try:
        await _follow_log(gw, conn, live, replay.LogCursor(response_id, last_seq))
    finally:
        if conn.conversation.active_response == response_id:
            conn.conversation.finish_response()


async def _follow_log(gw: Gateway, conn: Connection, live: LiveSession, cursor: replay.LogCursor) -> None:
    assert gw.store is not None
    rid = cursor.response_id
    deadline = time.monotonic() + FOLLOW_STALL_S
    while time.monotonic() < deadline:
        if live.conn is not conn:
            return  # the client went away (or resumed on yet another socket)
        try:
            frames = await gw.store.read_frames(live.session_id, rid, cursor.seq)
        except StoreError:
            frames = []
        if frames is None:
            if live.session.active_response == rid and not cursor.parts:
                await asyncio.sleep(POLL_S)  # started, first frames not written yet
                continue
            conn.send_error(RecoveryImpossible(f"no frames kept for {rid}"))
            return
        if frames:
            deadline = time.monotonic() + FOLLOW_STALL_S
        for f in frames:
            verdict = cursor.accept(f)
            if verdict == "skip":
                continue
            if verdict == "gap":
                conn.send_error(cursor.gap_error())
                return
            if verdict == "done":
                await _adopt_remote_turn(gw, live, cursor)
                if conn.conversation.active_response == rid:
                    conn.conversation.finish_response()  # before the client can see done and reply
            conn.send(f)
            gw.metrics.replayed_frames.inc()
            if verdict == "done":
                return
        await asyncio.sleep(POLL_S)
    conn.send_error(RecoveryImpossible(f"{rid} stopped before its end"))


async def _adopt_remote_turn(gw: Gateway, live: LiveSession, cursor: replay.LogCursor) -> None:
    """A response finished on another gateway: put its whole answer into our history (the
    other gateway's own save is refused by the store once the token rotated here)."""
    if live.session.active_response != cursor.response_id:
        return
    assert gw.store is not None and gw.writer is not None
    try:
        log_frames = await gw.store.read_frames(live.session_id, cursor.response_id, -1) or []
    except StoreError:
        log_frames = []
    apply(gw, live, live.machine.adopt_remote(cursor.response_id, log_frames, cursor.parts, time.time()))
