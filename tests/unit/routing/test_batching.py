"""Arrival batching: batches keep every label, form under load, and a full queue routes by fast signals."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator, Sequence

import pytest

from rtserver.routing.batching import BatchSettings, ClassifierBatcher
from rtserver.routing.classifier import Classification, IntentClassifier
from rtserver.routing.router import Router, fast_use_case
from rtserver.routing.training.dataset import VAL_FILE, load_examples

from .conftest import MODELS, FakeClassifier


class GatedClassifier(FakeClassifier):
    """A fake whose batches block until ``gate`` is set, recording each batch's texts."""

    def __init__(self) -> None:
        super().__init__({"write a python function": "agent"})
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def classify_batch(self, texts: Sequence[str]) -> list[Classification]:
        self.gate.wait(10.0)
        self.batches.append(list(texts))
        return [self.classify(t) for t in texts]


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="classifier") as ex:
        yield ex


@pytest.mark.model
def test_batched_labels_equal_unbatched_on_the_validation_set(shipped: IntentClassifier) -> None:
    assert shipped.enable_batches()
    texts = [e.text for e in load_examples(VAL_FILE)]
    alone = [shipped.classify(t).use_case for t in texts]
    for size in (2, 5, 16):  # arrival order mixes short and long messages in one padded batch
        batched = [c.use_case for i in range(0, len(texts), size) for c in shipped.classify_batch(texts[i:i + size])]
        assert batched == alone, f"batch size {size}"


@pytest.mark.asyncio
async def test_batches_form_while_the_thread_is_busy(pool: concurrent.futures.Executor) -> None:
    fake = GatedClassifier()
    batcher = ClassifierBatcher(fake, BatchSettings(max_batch=4, queue_limit=100, max_wait_s=10.0, threads=1), pool)
    tasks = [asyncio.create_task(batcher.classify(f"message {i}")) for i in range(9)]
    await asyncio.sleep(0.05)
    fake.gate.set()
    verdicts = await asyncio.gather(*tasks)
    assert [v.use_case for v in verdicts if v is not None] == ["chat"] * 9
    # the first runs alone at once; the other eight queued behind it go in batches of <= 4, in order
    assert fake.batches[0] == ["message 0"]
    assert [len(b) for b in fake.batches[1:]] == [4, 4]
    assert [t for b in fake.batches for t in b] == [f"message {i}" for i in range(9)]
    assert batcher.stats.sizes == {1: 1, 4: 2}


@pytest.mark.asyncio
async def test_a_full_queue_routes_by_fast_signals_and_says_so(pool: concurrent.futures.Executor) -> None:
    fake = GatedClassifier()
    batching = BatchSettings(max_batch=2, queue_limit=3, max_wait_s=10.0, threads=1)
    router = Router(fake, MODELS, executor=pool, batching=batching)
    waiting = [asyncio.create_task(router.route(None, f"hello {i}", [], None)) for i in range(3)]
    await asyncio.sleep(0.05)
    shed = await router.route(None, "write a poem about the sea", [], None)
    assert (shed.decision, shed.use_case, shed.classifier_ms, shed.confidence) == ("fast", "creative", None, 0.0)
    nothing = await router.route(None, "hmm", [], None)
    assert (nothing.decision, nothing.use_case) == ("fast", "chat")
    fake.gate.set()
    assert [d.decision for d in await asyncio.gather(*waiting)] == ["full"] * 3
    assert router.batcher is not None and router.batcher.stats.shed_full == 2
    # once the queue drains, the model runs again
    again = await router.route(None, "write a python function", [], None)
    assert (again.decision, again.use_case) == ("full", "agent")


@pytest.mark.asyncio
async def test_a_later_message_keeps_its_route_when_shed(pool: concurrent.futures.Executor) -> None:
    fake = GatedClassifier()
    fake.gate.set()
    router = Router(fake, MODELS, executor=pool, batching=BatchSettings(queue_limit=1, threads=1))
    state = (await router.route(None, "write a python function", [], None)).state
    fake.gate.clear()
    blocker = asyncio.create_task(router.route(None, "other conversation", [], None))
    await asyncio.sleep(0.05)
    d = await router.route(state, "write a poem about it", [], None)  # a new cue: would need the model
    assert (d.decision, d.use_case, d.model_id, d.context_changed) == ("fast", "agent", "agent-model", True)
    assert d.state == state  # the basis is not widened: the novelty is classified next time
    fake.gate.set()
    await blocker
    again = await router.route(d.state, "write a poem about it", [], None)
    assert again.decision != "fast" and again.classifier_ms is not None  # now the model ran


@pytest.mark.asyncio
async def test_a_message_queued_past_max_wait_is_handed_back(pool: concurrent.futures.Executor) -> None:
    fake = GatedClassifier()
    batcher = ClassifierBatcher(fake, BatchSettings(max_batch=8, queue_limit=100, max_wait_s=0.01, threads=1), pool)
    first = asyncio.create_task(batcher.classify("runs at once"))
    late = asyncio.create_task(batcher.classify("waits behind it"))
    await asyncio.sleep(0.05)
    fake.gate.set()
    assert (await first) is not None
    assert (await late) is None
    assert batcher.stats.shed_late == 1


@pytest.mark.asyncio
async def test_a_cancelled_caller_drops_out_of_the_queue(pool: concurrent.futures.Executor) -> None:
    fake = GatedClassifier()
    batcher = ClassifierBatcher(fake, BatchSettings(max_batch=8, queue_limit=100, max_wait_s=10.0, threads=1), pool)
    first = asyncio.create_task(batcher.classify("a"))
    gone = asyncio.create_task(batcher.classify("b"))
    kept = asyncio.create_task(batcher.classify("c"))
    await asyncio.sleep(0.02)
    gone.cancel()
    fake.gate.set()
    assert (await first) is not None and (await kept) is not None
    assert fake.batches == [["a"], ["c"]]
    assert batcher.queued == 0


@pytest.mark.asyncio
async def test_a_window_holds_a_lone_message_for_company(pool: concurrent.futures.Executor) -> None:
    fake = GatedClassifier()
    fake.gate.set()
    batcher = ClassifierBatcher(
        fake, BatchSettings(max_batch=8, window_s=0.05, queue_limit=100, max_wait_s=10.0, threads=1), pool)
    a = asyncio.create_task(batcher.classify("a"))
    await asyncio.sleep(0.005)
    b = asyncio.create_task(batcher.classify("b"))
    await asyncio.gather(a, b)
    assert fake.batches == [["a", "b"]]


@pytest.mark.model
@pytest.mark.asyncio
async def test_concurrent_first_messages_through_the_real_model_keep_their_labels(
    shipped: IntentClassifier, pool: concurrent.futures.Executor
) -> None:
    shipped.enable_batches()
    texts = [e.text for e in load_examples(VAL_FILE)][:40]
    router = Router(shipped, MODELS, executor=pool, batching=BatchSettings(max_batch=8, queue_limit=64,
                                                                             max_wait_s=60.0, threads=2))
    decisions = await asyncio.gather(*(router.route(None, t, [], None) for t in texts))
    assert [d.decision for d in decisions] == ["full"] * len(texts)
    assert [d.use_case for d in decisions] == [shipped.classify(t).use_case for t in texts]
    assert router.batcher is not None and max(router.batcher.stats.sizes) > 1


def test_fast_use_case_takes_a_single_cue_class_else_chat() -> None:
    assert fast_use_case(frozenset({"reasoning"})) == "reasoning"
    assert fast_use_case(frozenset()) == "chat"
    assert fast_use_case(frozenset({"agent", "creative"})) == "chat"
