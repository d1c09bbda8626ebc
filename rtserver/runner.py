"""The one event-loop runner: uvloop when it is installed, else asyncio's own loop.

The gateway (``rtserver serve``, each ``--processes`` child), the load tester and the
benchmarks all run their top coroutine through :func:`run_uvloop`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_uvloop"]

T = TypeVar("T")


def run_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new uvloop loop (asyncio's when uvloop is absent)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)
