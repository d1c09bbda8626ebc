from __future__ import annotations

import asyncio

import pytest

from rtserver.runner import run_gated, run_uvloop


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


def test_run_gated_gives_the_coroutine_a_loop_with_a_step_gate() -> None:
    from rtserver.engines.stepgate import gate_of

    async def main() -> bool:
        await asyncio.sleep(0)
        return gate_of(asyncio.get_running_loop()) is not None

    assert run_gated(main()) is True
    assert run_uvloop(main()) is False  # uvloop has none: engines step ungated there


@pytest.mark.parametrize(
    ("engine", "host", "gated"),
    [
        ("openvino", "inline", True),  # openvino's step holds the GIL: the worker's own loop must be gated
        ("transformers", "inline", True),
        ("openvino", "auto", False),  # auto hosts it in an engine host, which has its own gated loop
        ("openvino", "process", False),
        ("synthetic", "auto", False),  # inline, but its steps never block
        ("openai", "inline", False),
    ],
)
def test_a_worker_computing_a_blocking_engine_inline_runs_on_a_gated_loop(engine: str, host: str, gated: bool) -> None:
    from rtserver.workers.host import EngineSpec
    from rtserver.workers.worker import gated_worker

    assert gated_worker(EngineSpec(name=engine, model="m"), host) is gated


@pytest.mark.parametrize(
    ("overrides", "gated"),
    [
        ({"embedded_mode": "inproc", "embedded_engine": "openvino"}, True),  # the model in the gateway's process
        ({"embedded_mode": "inproc", "embedded_engine": "synthetic"}, False),
        ({"embedded_mode": "process", "embedded_engine": "openvino"}, False),  # the default: a worker process
        ({"embedded_mode": "inproc", "embedded_engine": "openvino", "worker": ["127.0.0.1:7100"]}, False),
    ],
)
def test_a_gateway_computing_openvino_in_process_runs_on_a_gated_loop(overrides: dict[str, object], gated: bool) -> None:
    from rtserver.config import load_settings
    from rtserver.server.resources import engine_blocks_loop

    assert engine_blocks_loop(load_settings(env={}, overrides=overrides)) is gated
