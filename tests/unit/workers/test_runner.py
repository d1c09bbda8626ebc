"""The engine-side stream runner: exactly one done per gen, credit pauses without loss."""

from __future__ import annotations

import asyncio
from typing import Any

from rtserver.engines.synthetic import SyntheticEngine
from rtserver.workers.runner import Runner


def _gen(i: int, max_tokens: int = 50, win: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "gen", "id": i, "messages": [["user", "hi"]], "params": {"max_tokens": max_tokens}}
    if win is not None:
        frame["win"] = win
    return frame


async def test_a_gen_cancelled_before_it_ever_ran_still_gets_its_done() -> None:
    out: list[dict[str, Any]] = []
    runner = Runner(SyntheticEngine(tokens=50, tokens_per_s=0), out.append)
    for i in range(100):
        runner.handle(_gen(i))
        runner.handle({"t": "cancel", "id": i})  # same turn of the loop: the task never started
    await runner.wait_idle()
    dones = [f for f in out if f["t"] == "done"]
    assert sorted(f["id"] for f in dones) == list(range(100))
    assert {f["reason"] for f in dones} == {"cancelled"}
    assert len(runner) == 0


async def test_a_window_pauses_the_stream_and_credit_resumes_it_without_loss() -> None:
    out: list[dict[str, Any]] = []
    runner = Runner(SyntheticEngine(tokens=20, tokens_per_s=0), out.append)
    runner.handle(_gen(1, max_tokens=20, win=5))
    for _ in range(20):
        await asyncio.sleep(0)
    assert [f["t"] for f in out] == ["tok"] * 5  # paused at the window
    runner.handle({"t": "credit", "id": 1, "n": 100})
    await runner.wait_idle()
    toks = [f for f in out if f["t"] == "tok"]
    assert len(toks) == 20 and out[-1]["t"] == "done" and out[-1]["completion"] == 20
    words = "".join(f["text"] for f in toks).split()
    assert words[:3] == ["lorem", "ipsum", "dolor"] and len(words) == 20
