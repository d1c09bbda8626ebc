"""The step gate: a stepping thread's ``wait()`` returns once the event loop has run
everything that was ready and all it scheduled in turn, so a frame that needs several
loop turns is through before the next engine step (engines/stepgate.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rtserver.engines.stepgate import GatedLoop, StepGate, gate_of
from rtserver.runner import run_gated


def _in_thread(fn: object) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)  # type: ignore[arg-type]
    t.start()
    return t


def test_wait_returns_after_a_chain_of_loop_turns_has_finished() -> None:
    turns_done: list[int] = []
    seen_at_open: list[int] = []

    async def chain(n: int) -> None:  # n loop turns, each scheduling the next (like gen → task → put)
        for i in range(n):
            await asyncio.sleep(0)
            turns_done.append(i)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = gate_of(loop)
        assert gate is not None
        opened: list[bool] = []

        def stepper() -> None:
            loop.call_soon_threadsafe(lambda: loop.create_task(chain(200)))
            opened.append(gate.wait())
            seen_at_open.append(len(turns_done))

        thread = _in_thread(stepper)
        await asyncio.to_thread(thread.join, 10)
        assert opened == [True]

    run_gated(main())
    assert seen_at_open == [200]  # every turn of the chain ran before the gate opened


def test_wait_gives_up_after_max_wait_when_the_loop_is_never_idle() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = StepGate(loop, max_wait_s=0.05)
        result: list[bool] = []
        stop = False

        async def spin() -> None:
            while not stop:
                await asyncio.sleep(0)

        task = loop.create_task(spin())
        thread = _in_thread(lambda: result.append(gate.wait()))
        await asyncio.to_thread(thread.join, 10)
        stop = True
        await task
        assert result == [False]

    run_gated(main())


def test_wait_on_a_closed_loop_returns_at_once() -> None:
    loop = GatedLoop()
    loop.close()
    assert loop.step_gate.wait() is False


def test_only_a_gated_loop_has_a_gate() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert gate_of(loop) is None
    finally:
        loop.close()
    uvloop = pytest.importorskip("uvloop")
    other = uvloop.new_event_loop()
    try:
        assert gate_of(other) is None
    finally:
        other.close()
