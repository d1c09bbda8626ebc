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


async def test_credit_waits_while_a_real_socket_holds_unsent_bytes_and_is_paid_as_the_peer_reads() -> None:
    import socket

    from rtserver.server.outbox import socket_backlog

    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    peer, _ = listener.accept()
    listener.close()
    peer.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    try:
        probe = socket_backlog(transport)
        assert probe is not None
        box, credit = Outbox(100, backlog=probe, low_water=64 * 1024), _Credit()
        transport.write(b"x" * 4_000_000)  # a peer that does not read: this stays in the socket
        await asyncio.sleep(0.05)
        assert probe() > 64 * 1024
        for i in range(3):
            assert box.put(_tok(i))
            box.charge(credit)
        assert len(box.take_nowait(3)) == 3
        await asyncio.sleep(0.1)
        assert credit.acked == 0  # handed to a socket that is not draining: the stream stays paused
        async with asyncio.timeout(30):  # the peer reads: the socket drains and the credit comes back
            while credit.acked < 3:
                try:
                    while peer.recv(1 << 20):
                        pass
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.01)
        assert credit.acked == 3
    finally:
        transport.abort()
        peer.close()


def test_credit_held_for_a_backed_up_socket_is_paid_when_the_socket_goes() -> None:
    async def main() -> int:
        box, credit = Outbox(100, backlog=lambda: 1 << 30), _Credit()
        for i in range(4):
            box.put(_tok(i))
            box.charge(credit)
        box.take_nowait(2)
        assert credit.acked == 0
        box.forgive()  # two taken (held), two still queued: none will be written now
        return credit.acked

    assert asyncio.run(main()) == 4
