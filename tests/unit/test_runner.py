from __future__ import annotations

import asyncio

import pytest

from rtserver.runner import run_uvloop


def test_runs_the_coroutine_on_uvloop_and_returns_its_value() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[int, bool]:
        await asyncio.sleep(0)
        return 42, isinstance(asyncio.get_running_loop(), uvloop.Loop)

    assert run_uvloop(main()) == (42, True)


def test_an_exception_propagates() -> None:
    async def main() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_uvloop(main())
