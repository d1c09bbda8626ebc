"""The WorkerHandle contract (rtserver/workers/handle.py), one suite over both implementations.

* ``client``: ``WorkerClient`` against a real ``python -m rtserver worker --engine synthetic``
  process on loopback, with ``--max-queue 0``.
* ``local``: ``LocalWorker`` around the synthetic engine in this process, same capacity
  and queue bound.

The synthetic engine always takes 1,024 sequences (engines/registry.py), so filling a
worker means 1,024 streams; each takes its credit and so stops after its window.

Both use a flow-control window of 4 tokens. The behaviour checked is what the gateway
relies on (docs/worker-protocol.md): tokens then exactly one ``done`` with usage; a
closed generation frees its slot; beyond the admission bound a request finishes at
once with error ``overloaded``; a window pauses a stream and credit resumes it with
no token lost; ``state`` says which worker and model it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from rtserver.engines.base import ChatMessage, EngineEvent, FinishEvent, GenerateRequest, SamplingParams, TokenEvent
from rtserver.engines.synthetic import SyntheticEngine
from rtserver.workers.client import WorkerClient
from rtserver.workers.handle import Generation, WorkerHandle
from rtserver.workers.local import LocalWorker
from tests.integration.test_workers import WorkerProc, start_worker

NAME, MODEL, CAPACITY, WINDOW = "contract-w", "contract-model", 1024, 4
RATE = 100.0  # tokens/s: streams stay open long enough to be cancelled or refused
WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]


@pytest.fixture(scope="module")
def worker_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    w = start_worker(NAME, tmp_path_factory.mktemp("worker-contract"), "--model-id", MODEL,
                     "--capacity", str(CAPACITY), "--max-queue", "0", "--synthetic-rate", str(RATE),
                     "--synthetic-tokens", "1000", "--log-level", "warning")
    yield w
    w.stop()


@pytest.fixture(params=["client", "local"])
async def handle(request: pytest.FixtureRequest) -> AsyncIterator[WorkerHandle]:
    h: WorkerClient | LocalWorker
    if request.param == "client":
        proc: WorkerProc = request.getfixturevalue("worker_process")
        h = WorkerClient(proc.address, window=WINDOW)
    else:
        engine = SyntheticEngine(model_id=MODEL, tokens_per_s=RATE, tokens=1000, capacity=CAPACITY)
        h = LocalWorker(engine, name=NAME, window=WINDOW, max_queue=0)
    await h.connect(wait=True)
    try:
        yield h
    finally:
        await h.close()


def ask(max_tokens: int) -> GenerateRequest:
    return GenerateRequest("r_contract", (ChatMessage("user", "tell me something"),),
                           SamplingParams(max_tokens=max_tokens))


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` (a worker's state is refreshed by its heartbeat) for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


async def token(gen: Generation) -> TokenEvent:
    event = await anext(gen)
    assert isinstance(event, TokenEvent), event
    return event


async def drain(gen: Generation, on_token: Callable[[TokenEvent], Awaitable[None] | None] | None = None,
                ) -> tuple[list[TokenEvent], list[EngineEvent]]:
    """Read ``gen`` to its end: the tokens, and every event after the first finish (should be just it)."""
    tokens: list[TokenEvent] = []
    rest: list[EngineEvent] = []
    async for event in gen:
        if isinstance(event, TokenEvent) and not rest:
            tokens.append(event)
            if on_token is not None:
                result = on_token(event)
                if result is not None:
                    await result
        else:
            rest.append(event)
    return tokens, rest


# ---------------------------------------------------------------- state
async def test_state_says_which_worker_and_model(handle: WorkerHandle) -> None:
    assert handle.alive
    s = handle.state
    assert (s.name, s.model, s.engine) == (NAME, MODEL, "synthetic")
    assert "text" in s.modalities and s.capacity == CAPACITY
    assert s.continues  # the synthetic engine honours a prefix


# ---------------------------------------------------------------- a generation
async def test_a_generation_streams_tokens_then_exactly_one_done_with_usage(handle: WorkerHandle) -> None:
    tokens, rest = await drain(handle.generate(ask(12)))
    assert "".join(t.text for t in tokens).split() == (WORDS * 2)[:12]
    assert len(rest) == 1 and isinstance(rest[0], FinishEvent)
    done = rest[0]
    assert (done.reason, done.completion_tokens) == ("length", 12)
    assert done.prompt_tokens > 0 and done.error is None


async def test_closing_a_generation_mid_stream_frees_its_slot(handle: WorkerHandle) -> None:
    gen = handle.generate(ask(500))
    for _ in range(3):
        await token(gen)
    assert await eventually(lambda: handle.state.inflight == 1)
    await gen.aclose()
    assert await eventually(lambda: handle.state.inflight == 0 and handle.state.active == 0)
    tokens, rest = await drain(handle.generate(ask(5)))  # the slot serves the next request
    assert len(tokens) == 5 and [type(e) for e in rest] == [FinishEvent]


# ---------------------------------------------------------------- admission
async def test_beyond_capacity_a_request_is_refused_overloaded_until_a_slot_frees(handle: WorkerHandle) -> None:
    running = [handle.generate(ask(500)) for _ in range(CAPACITY)]
    for gen in running:
        gen.take_credit()  # never acknowledged: each stream stops after its window
    await asyncio.gather(*(token(gen) for gen in running))
    refused = handle.generate(ask(5))
    event = await anext(refused)
    assert isinstance(event, FinishEvent)
    assert (event.reason, event.error, event.completion_tokens) == ("error", "overloaded", 0)
    with pytest.raises(StopAsyncIteration):
        await anext(refused)  # nothing after the done
    await running[0].aclose()
    retried = handle.generate(ask(5))
    assert isinstance(await anext(retried), TokenEvent)  # the freed slot takes it
    await retried.aclose()
    for gen in running[1:]:
        await gen.aclose()
    assert await eventually(lambda: handle.state.inflight == 0)


# ---------------------------------------------------------------- flow control
async def test_a_window_pauses_the_stream_and_credit_resumes_it_without_loss(handle: WorkerHandle) -> None:
    gen = handle.generate(ask(12))
    credit = gen.take_credit()
    assert credit is not None and credit.window == WINDOW
    held = [await token(gen) for _ in range(WINDOW)]  # taken, not acknowledged
    assert credit.paused
    pending = asyncio.ensure_future(anext(gen))
    done, _ = await asyncio.wait({pending}, timeout=0.5)
    assert not done, "the stream went on past its window"
    credit.ack(len(held))
    first_after = await asyncio.wait_for(pending, 10.0)
    assert isinstance(first_after, TokenEvent)
    credit.ack(1)
    tokens, rest = await drain(gen, lambda _t: credit.ack(1))
    text = "".join(t.text for t in [*held, first_after, *tokens])
    assert text.split() == (WORDS * 2)[:12]  # every token, in order
    assert [type(e) for e in rest] == [FinishEvent] and isinstance(rest[0], FinishEvent)
    assert rest[0].completion_tokens == 12


async def test_a_consumer_that_does_not_take_credit_is_never_paused(handle: WorkerHandle) -> None:
    tokens, rest = await drain(handle.generate(ask(3 * WINDOW)))
    assert len(tokens) == 3 * WINDOW and [type(e) for e in rest] == [FinishEvent]

