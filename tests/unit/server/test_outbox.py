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
