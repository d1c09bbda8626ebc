from __future__ import annotations

import asyncio

from rtserver.server.outbox import Outbox
from rtserver.server.ratelimit import TokenBucket


def tok(seq: int, rid: str = "r") -> dict[str, object]:
    return {"type": "token", "response_id": rid, "seq": seq, "text": f"<{seq}>", "stats": {}}


def test_lagging_socket_gets_tokens_merged_not_dropped() -> None:
    box = Outbox(limit=4)  # merging starts at 2 queued frames
    for seq in range(10):
        assert box.put(tok(seq))
    frames = box.drain_nowait()
    assert "".join(str(f["text"]) for f in frames) == "".join(f"<{i}>" for i in range(10))
    assert frames[0]["seq"] == 0 and frames[1]["seq"] == 1 and frames[1]["seq_last"] == 9
    assert box.coalesced == 8


def test_full_outbox_refuses_non_mergeable_frames() -> None:
    box = Outbox(limit=2)
    assert box.put({"type": "route"})
    assert box.put({"type": "error"})
    assert not box.put({"type": "done"})


def test_merging_leaves_the_recorded_frame_untouched() -> None:
    box = Outbox(limit=2)
    first = tok(0)
    box.put({"type": "route"})
    box.put(first)
    box.put(tok(1))
    assert first["text"] == "<0>" and "seq_last" not in first


def test_get_waits_for_a_frame() -> None:
    async def main() -> dict[str, object]:
        box = Outbox(limit=4)
        waiter = asyncio.create_task(box.get())
        await asyncio.sleep(0)
        box.put(tok(0))
        return await asyncio.wait_for(waiter, 1)

    assert asyncio.run(main())["seq"] == 0


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token refilled
    assert not bucket.take(0.5)


def test_take_nowait_returns_the_oldest_frames_in_order_without_waiting() -> None:
    from rtserver.server.outbox import Outbox

    box = Outbox(16)
    for i in range(5):
        assert box.put({"type": "token", "response_id": "r", "seq": i, "text": "x"})
    assert [f["seq"] for f in box.take_nowait(3)] == [0, 1, 2]
    assert [f["seq"] for f in box.take_nowait(10)] == [3, 4]
    assert box.take_nowait(4) == [] and len(box) == 0


# ------------------------------------------------------------------ credit (flow control to the worker)
class _Credit:
    def __init__(self) -> None:
        self.acked = 0

    def ack(self, n: int = 1) -> None:
        self.acked += n


def _tok(seq: int) -> dict[str, object]:
    return {"type": "token", "response_id": "r1", "seq": seq, "text": "x", "stats": {}}


async def test_credit_is_paid_when_the_writer_takes_the_frame_not_before() -> None:
    box, credit = Outbox(100), _Credit()
    for i in range(3):
        assert box.put(_tok(i))
        box.charge(credit)
    assert credit.acked == 0  # queued, not written: the worker's stream must not run ahead
    await box.get()
    await box.get()
    assert credit.acked == 2


async def test_a_merged_frame_pays_for_every_token_merged_into_it() -> None:
    box, credit = Outbox(4), _Credit()  # merging starts at 2 queued frames
    for i in range(6):
        assert box.put(_tok(i))
        box.charge(credit)
    assert len(box) == 2
    while len(box):
        await box.get()
    assert credit.acked == 6


def test_frames_that_will_never_be_written_are_forgiven() -> None:
    box, credit = Outbox(100), _Credit()
    for i in range(5):
        box.put(_tok(i))
        box.charge(credit)
    box.forgive()  # the socket went away: the replay log has the frames
    assert credit.acked == 5
    box.closed = True
    box.put(_tok(5))
    box.charge(credit)  # a closed outbox queues nothing: paid at once
    assert credit.acked == 6


def test_the_writers_batch_pays_the_credit_of_every_frame_it_takes() -> None:
    box, credit = Outbox(100), _Credit()
    for i in range(5):
        assert box.put(_tok(i))
        box.charge(credit)
    assert [f["seq"] for f in box.take_nowait(3)] == [0, 1, 2]
    assert credit.acked == 3  # a stream written in batches must not stall at its window
    box.take_nowait(10)
    assert credit.acked == 5
