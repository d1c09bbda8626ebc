"""Closing the openvino engine while it generates (what a worker does on Ctrl-C once its drain
ends) releases the pipeline without openvino's "BlockManager leaked ..." errors, and the open
stream ends with reason ``error`` (engines.md, the contract). Runs in a subprocess: openvino
prints those errors from C++ to the process's own stderr when the pipeline is destroyed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.model

SCRIPT = textwrap.dedent("""
    import asyncio
    from rtserver.engines.base import ChatMessage, FinishEvent, GenerateRequest, SamplingParams, TokenEvent
    from rtserver.engines.openvino import OpenVinoEngine

    async def main():
        engine = OpenVinoEngine("smollm2-135m", capacity=4)
        await engine.start()
        first = asyncio.Event()
        finishes = []

        async def reply():
            request = GenerateRequest("long", (ChatMessage("user", "Write a long story about a dragon."),),
                                      SamplingParams(max_tokens=400, temperature=0.0))
            async for ev in engine.generate(request):
                if isinstance(ev, TokenEvent):
                    first.set()
                else:
                    finishes.append(ev.reason)

        task = asyncio.create_task(reply())
        await asyncio.wait_for(first.wait(), 120)
        await engine.close()
        await asyncio.wait_for(task, 30)
        print("FINISH", finishes, flush=True)

    asyncio.run(main())
""")


def test_closing_during_a_reply_releases_the_pipeline_without_leak_errors() -> None:
    pytest.importorskip("openvino_genai")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FINISH ['error']" in done.stdout
    assert "leaked" not in done.stderr, done.stderr[-3000:]
