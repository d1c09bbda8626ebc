"""``serve --processes N`` refuses setups that cannot share state, with one clear line."""

from __future__ import annotations

import pytest

from rtserver.config import load_settings
from rtserver.exceptions import ConfigError
from rtserver.server.processes import check_processes


def test_one_process_needs_nothing() -> None:
    check_processes(load_settings(env={}, overrides={"processes": 1}))


def test_several_processes_need_redis() -> None:
    with pytest.raises(ConfigError, match="needs --redis"):
        check_processes(load_settings(env={}, overrides={"processes": 2}))


def test_several_processes_refuse_an_inproc_engine_per_process() -> None:
    s = load_settings(env={}, overrides={"processes": 2, "redis": "redis://127.0.0.1:6379", "embedded_mode": "inproc"})
    with pytest.raises(ConfigError, match="one model per process"):
        check_processes(s)
    check_processes(load_settings(env={}, overrides={"processes": 2, "redis": "redis://127.0.0.1:6379"}))


@pytest.mark.parametrize("name,value", [("processes", 0), ("classifier_batch", 0), ("classifier_queue", 0),
                                        ("write_batch_frames", 0), ("write_delay_ms", -1), ("classifier_threads", -1)])
def test_out_of_range_scale_settings_are_refused(name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env={}, overrides={name: value})


def test_a_port_held_by_another_reuseport_group_is_refused() -> None:
    import socket

    from rtserver.server.processes import _reserve

    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1"):
            _reserve("127.0.0.1", other.getsockname()[1])
    finally:
        other.close()
    free = _reserve("127.0.0.1", 0)
    assert free.getsockname()[1] > 0
    free.close()
