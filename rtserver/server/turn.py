"""The executor of one response: route, pick a worker, relay its stream, and carry out
what the ``ConversationMachine`` decides at each event.

Nothing here decides what a conversation does next (rtserver/protocol/machine.py
does); this module only does the I/O: the router and the pool, the worker stream,
the socket (``LiveSession.emit``), the session writer and the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from rtserver.engines.base import TokenEvent
from rtserver.exceptions import (
    Draining,
    InternalError,
    InvalidRouteOverride,
    NoWorkerAvailable,
    RouteError,
    RtServerError,
    WorkerLost,
)
from rtserver.metrics import observe_many
from rtserver.protocol import actions as act
from rtserver.protocol import events as ev
from rtserver.protocol.frames import Message
from rtserver.server.live import LiveSession

if TYPE_CHECKING:
    from rtserver.routing.router import RouteDecision
    from rtserver.server.connection import Connection
    from rtserver.server.context import GatewayContext as Gateway
    from rtserver.workers.pool import WorkerHandle

log = logging.getLogger("rtserver.gateway")

Next = act.Generate | act.Retry | None


def start_response(gw: Gateway, conn: Connection, msg: Message, received: float) -> None:
    """An admitted message: begin its response in a task owned by the session (it outlives the socket)."""
    live = conn.live
    assert live is not None
    if gw.draining:
        conn.send_error(Draining("server is shutting down; reconnect to resume", ref=msg.id))
        return
    response_id = "r_" + secrets.token_urlsafe(9)
    conn.conversation.start_response(response_id)
    machine = live.machine
    apply(gw, live, machine.handle(ev.MessageAccepted(msg, response_id, received)))
    turn = machine.active
    gw.metrics.messages.labels(conn.encoding).inc()
    if gw.settings.log_content:  # off by default: no user content in logs
        log.info("message %s", msg.id, extra={"session_id": live.session_id, "response_id": response_id,
                                              "text": msg.text[:2000]})

    def ended(_: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran: its message still gets its one done.
        if machine.active is turn:
            apply(gw, live, machine.handle(ev.Cancelled(time.perf_counter(), time.time())))

    live.task = asyncio.create_task(respond(gw, live, msg))
    live.task.add_done_callback(ended)


def cancel_response(gw: Gateway, conn: Connection) -> None:
    live = conn.live
    if live is not None:
        apply(gw, live, live.machine.handle(ev.CancelRequested()))


async def respond(gw: Gateway, live: LiveSession, msg: Message) -> None:
    machine = live.machine
    handles: dict[str, WorkerHandle] = {}
    try:
        step: Next = apply(gw, live, machine.handle(await _route(gw, live, msg, handles)))
        while step is not None:
            if isinstance(step, act.Retry):
                worker = await _retry_worker(gw, step.model, step.avoid)
                handles[worker.state.name] = worker
                step = apply(gw, live, machine.handle(ev.WorkerPicked(worker.state.name)))
            else:
                step = await _stream(gw, live, handles, step)
    except asyncio.CancelledError:
        apply(gw, live, machine.handle(ev.Cancelled(time.perf_counter(), time.time())))
    except Exception as exc:  # every failure ends the response with an error frame
        if machine.active is not None:
            apply(gw, live, machine.handle(ev.Failed(_client_error(exc, live), time.perf_counter(), time.time())))


def _client_error(exc: Exception, live: LiveSession) -> RtServerError:
    """What the client is told: the error itself when it is the client's or a documented one;
    ``internal`` (logged) for a routing bug or anything unexpected."""
    rid = live.machine.active.log.response_id if live.machine.active is not None else "?"
    if isinstance(exc, InvalidRouteOverride):  # the client's context.use_case: its fault
        return exc
    if isinstance(exc, RouteError):  # any other routing failure is a server bug, never the client's
        log.exception("response %s: routing failed", rid, exc_info=exc)
        return InternalError("internal error")
    if isinstance(exc, RtServerError):
        return exc
    log.exception("response %s failed", rid, exc_info=exc)
    return InternalError("internal error")


async def _route(gw: Gateway, live: LiveSession, msg: Message, handles: dict[str, WorkerHandle]) -> ev.RouteDecided:
    assert gw.router is not None
    decision = await gw.router.route(live.route, msg.text, [a.kind for a in msg.attachments], msg.context)
    _count_decision(gw, decision)
    live.route = decision.state
    t_queue = time.perf_counter()
    pinned = None if decision.decision == "reroute" else live.session.worker
    worker = await pick_worker(gw, decision.model_id, pinned)
    handles[worker.state.name] = worker
    return ev.RouteDecided(
        use_case=decision.use_case, model=decision.model_id, decision=decision.decision,
        confidence=decision.confidence, route_ms=decision.route_ms, context_changed=decision.context_changed,
        state=decision.state.to_dict(), worker=worker.state.name, modalities=frozenset(worker.state.modalities),
        queue_ms=(time.perf_counter() - t_queue) * 1000.0, wall=time.time(),
    )


async def _stream(gw: Gateway, live: LiveSession, handles: dict[str, WorkerHandle], gen: act.Generate) -> Next:
    """Relay one generation; the machine says what follows its end (or its loss)."""
    machine = live.machine
    m = gw.metrics
    worker = handles[gen.worker]
    try:
        async with contextlib.aclosing(worker.generate(gen.request)) as events:
            live.credit = events.take_credit()  # flow control (None: the stream has none)
            async for e in events:
                if isinstance(e, TokenEvent):
                    apply(gw, live, machine.handle(ev.WorkerToken(e.text, e.tokens, e.queue_ms, time.perf_counter())))
                    turn = machine.active
                    if turn is not None and turn.clock.tokens == 1:
                        clock = turn.clock
                        m.ttft_seconds.labels(live.route.use_case if live.route else "?").observe(
                            (clock.first_token_at or clock.received) - clock.received)
                        m.queue_seconds.observe(clock.queue_ms / 1000)
                else:
                    m.tokens.labels(worker.state.model).inc(e.completion_tokens)
                    return apply(gw, live, machine.handle(ev.WorkerFinished(
                        e.reason, e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.error,
                        time.perf_counter(), time.time())))
            raise WorkerLost("worker stream ended without done")
    except WorkerLost as exc:
        heir = _heir(gw, worker.state.model, worker.state.name)
        if heir is not None:
            handles[heir.state.name] = heir
        return apply(gw, live, machine.handle(ev.WorkerLostEvent(
            str(exc), heir.state.name if heir is not None else None, time.perf_counter(), time.time())))


# ---------------------------------------------------------------------- actions
def apply(gw: Gateway, live: LiveSession, actions: list[act.Action]) -> Next:
    """Carry out ``actions`` in order; return the one that needs awaiting (a generation or a retry)."""
    step: Next = None
    writer = gw.writer
    assert writer is not None
    for a in actions:
        if isinstance(a, act.Send):
            live.emit(a.frame, token=a.token)
            if a.error is not None:
                gw.metrics.errors.labels(a.error).inc()
        elif isinstance(a, act.AppendLog):
            if a.frames:
                writer.frames(a.session_id, a.response_id, a.frames)
        elif isinstance(a, act.Save):
            writer.save(a.session)
        elif isinstance(a, act.Generate | act.Retry):
            step = a
        elif isinstance(a, act.WorkerFailure):
            gw.metrics.worker_failures.labels(a.stage).inc()
            if a.stage == "before_first_token":
                log.warning("worker %s lost before first token; retrying", a.worker)
            elif a.stage == "continued":
                log.warning("worker %s lost mid-stream; continuing on %s", a.worker, a.heir)
        elif isinstance(a, act.Finished):
            _finished(gw, live, a)
        elif isinstance(a, act.CancelGeneration):
            if live.task is not None:
                live.task.cancel()  # its end comes back as Cancelled
        elif isinstance(a, act.StartGraceTimer):
            live.detach_timer = asyncio.get_running_loop().call_later(a.seconds, gw.expire_live, live)
        elif isinstance(a, act.Forget):
            gw.forget(live)
    return step


def _finished(gw: Gateway, live: LiveSession, a: act.Finished) -> None:
    done = a.done
    m = gw.metrics
    live.clear_stream()
    m.responses.labels(done.finish_reason).inc()
    if log.isEnabledFor(logging.INFO):
        extra: dict[str, Any] = {
            "session_id": live.session_id, "response_id": done.response_id, "decision": done.stats.decision,
            "use_case": a.use_case, "model": a.model, "worker": a.worker, "finish_reason": done.finish_reason,
            "ttft_ms": done.stats.ttft_ms, "total_ms": done.stats.total_ms,
            "tokens": done.usage.completion_tokens,
        }
        log.info("response %s %s", done.response_id, done.finish_reason, extra=extra)
    m.turn_seconds.observe(a.total_s)
    observe_many(m.token_gap_seconds, [g / 1000.0 for g in a.gaps_ms])  # once per response
    if live.conn is not None:
        live.conn.conversation.finish_response()
    elif live.detach_timer is None:
        gw.expire_live(live)


# ---------------------------------------------------------------------- workers and routing
def _count_decision(gw: Gateway, decision: RouteDecision) -> None:
    m = gw.metrics
    m.decisions.labels(decision.decision, decision.use_case).inc()
    m.route_seconds.labels(decision.decision).observe(decision.route_ms / 1000.0)
    if decision.classifier_ms is not None:
        m.classifier_seconds.observe(decision.classifier_ms / 1000.0)
    elif decision.decision == "bypass":
        m.bypass_seconds.observe(decision.route_ms / 1000.0)
    if decision.context_changed:
        m.context_changes.labels(decision.use_case).inc()


async def pick_worker(gw: Gateway, model: str, pinned: str | None, avoid: str | None = None) -> WorkerHandle:
    try:
        return gw.pool.pick(model, pinned, avoid=avoid)
    except NoWorkerAvailable:
        await gw.pool.wait_for(model, gw.settings.worker_retry_s)
        return gw.pool.pick(model, pinned, avoid=avoid)


async def _retry_worker(gw: Gateway, model: str, failed: str) -> WorkerHandle:
    """For a retry before the first token: another worker of ``model``; with none (a lone
    worker), whichever comes back within ``worker_retry_s``, the failed one included."""
    try:
        return gw.pool.pick(model, None, avoid=failed)
    except NoWorkerAvailable:
        return await pick_worker(gw, model, None)


def _heir(gw: Gateway, model: str, failed: str) -> WorkerHandle | None:
    """A live worker of ``model`` other than ``failed`` that can continue an answer."""
    try:
        heir = gw.pool.pick(model, None, avoid=failed)
    except NoWorkerAvailable:
        return None
    return heir if heir.state.continues else None
