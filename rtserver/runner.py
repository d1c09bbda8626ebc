"""The event-loop runners: uvloop when it is installed, else asyncio's own loop; and a
gated loop for a process whose engine steps in a thread that holds the GIL.

The gateway (``rtserver serve``, each ``--processes`` child), the load tester and the
benchmarks all run their top coroutine through :func:`run_uvloop`. The engine host, and
a worker that computes an engine such as openvino inline, run through :func:`run_gated`
(engines/stepgate.py says why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_gated", "run_uvloop"]

T = TypeVar("T")


def run_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new uvloop loop (asyncio's when uvloop is absent)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_gated(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on asyncio's selector loop with a step gate (``GatedLoop``)."""
    from rtserver.engines.stepgate import GatedLoop

    with asyncio.Runner(loop_factory=GatedLoop) as runner:
        return runner.run(coro)
