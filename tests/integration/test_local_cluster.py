"""The compose topology on one machine (compose/local_cluster.py): Redis, two synthetic
workers, two gateways, nginx in front. Conversations go through the load balancer and
move between gateways with hello{session_id, resume_token}: route, worker pin and
history survive, and the next message bypasses routing."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtserver.client import Client, Turn, collect
from tests.conftest import require
from tests.unit.deploy.conftest import load_local_cluster

TOKENS = 32


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    require("redis-server")
    require("nginx")
    lc = load_local_cluster()
    with lc.LocalCluster(tmp_path_factory.mktemp("cluster"), synthetic_rate=100.0,
                         synthetic_tokens=TOKENS) as running:
        yield running


def _gauge(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    assert match, f"{name} missing on gateway :{port}"
    return float(match.group(1))


def _assert_complete(turn: Turn) -> None:
    assert turn.done is not None and turn.done["finish_reason"] == "stop", turn.errors
    assert len(turn.tokens) == TOKENS and turn.seq_gaps == 0
    assert turn.done["last_seq"] == TOKENS - 1


async def _resume(url: str, session: dict[str, Any], **extra: Any) -> Client:
    return await Client.connect(url, hello={"session_id": session["session_id"],
                                            "resume_token": session["resume_token"], **extra})


async def test_conversations_through_the_lb_reach_both_gateways(cluster: Any) -> None:
    clients = []
    try:
        for _ in range(4):  # one at a time, kept open: least_conn sends the next to the idler gateway
            clients.append(await Client.connect(cluster.ws_url, encoding="msgpack"))
        firsts = await asyncio.gather(*(c.ask("hello there, how are you?") for c in clients))
        seconds = await asyncio.gather(*(c.ask("and what else?") for c in clients))
        for first, second in zip(firsts, seconds, strict=True):
            _assert_complete(first)
            _assert_complete(second)
            # routed on the first turn: by the classifier, or by the fast signals when its queue's
            # predicted wait is over classifier_max_wait_ms (docs/routing.md), as on a loaded machine
            assert first.route is not None and first.route["decision"] in ("full", "fast")
            assert second.route is not None and second.route["decision"] == "bypass"
            assert second.route["worker"] == first.route["worker"]
        open_per_gateway = [await asyncio.to_thread(_gauge, p, "rtserver_connections") for p in cluster.gateway_ports]
        assert sum(open_per_gateway) == 4
        assert all(n >= 1 for n in open_per_gateway), open_per_gateway
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_conversation_moves_to_the_other_gateway(cluster: Any) -> None:
    url_a, url_b = cluster.gateway_ws_urls
    a = await Client.connect(url_a)
    first = await a.ask("hello there")
    second = await a.ask("tell me more")
    _assert_complete(second)
    assert first.route is not None and second.route is not None
    session = a.session
    assert session is not None
    await a.close()

    b = await _resume(url_b, session)
    try:
        assert b.session is not None and b.session["resumed"] is True
        assert b.session["session_id"] == session["session_id"]
        assert b.session["route"] == {"use_case": first.route["use_case"], "model": first.route["model"],
                                      "worker": first.route["worker"]}
        third = await b.ask("tell me more")
        _assert_complete(third)
        assert third.route is not None and third.route["decision"] == "bypass"
        assert third.route["worker"] == first.route["worker"]
        # the prompt carries the history written on the other gateway
        assert second.done is not None and third.done is not None
        assert third.done["usage"]["prompt_tokens"] > second.done["usage"]["prompt_tokens"]
    finally:
        await b.close()


async def test_resume_through_the_lb(cluster: Any) -> None:
    c = await Client.connect(cluster.ws_url)
    first = await c.ask("hi!")
    _assert_complete(first)
    session = c.session
    assert session is not None
    await c.close()
    for _ in range(2):  # whichever gateway nginx picks, the session is there
        c = await _resume(cluster.ws_url, session)
        assert c.session is not None and c.session["resumed"] is True
        turn = await c.ask("again")
        _assert_complete(turn)
        assert turn.route is not None and turn.route["decision"] == "bypass"
        session = c.session
        await c.close()


async def test_response_in_flight_continues_on_the_other_gateway(cluster: Any) -> None:
    url_a, url_b = cluster.gateway_ws_urls
    a = await Client.connect(url_a)
    mid = await a.send_message("write a long story")
    got = Turn(message_id=mid)
    while len(got.tokens) < 3:
        collect(got, await a.recv(10), 0.0)
    assert got.route is not None
    session = a.session
    assert session is not None
    await a.close()  # dropped mid-response

    last_seq = got.tokens[-1]["seq"]
    b = await _resume(url_b, session, response_id=got.route["response_id"], last_seq=last_seq)
    try:
        rest = Turn(message_id=mid)
        while rest.done is None:
            frame = await b.recv(30)
            collect(rest, frame, 0.0)
            assert frame.get("type") != "error", frame
        seqs = [t["seq"] for t in rest.tokens]
        assert seqs == list(range(last_seq + 1, TOKENS)), seqs
        text = "".join(t["text"] for t in got.tokens[: last_seq + 1]) + rest.text
        assert len(text.split()) == TOKENS
        assert rest.done["finish_reason"] == "stop"
    finally:
        await b.close()


async def test_sessions_survive_a_gateway_crash(cluster: Any) -> None:
    """Last in this module: it kills a gateway (SIGKILL); nginx sends the resume to the other."""
    url_a = cluster.gateway_ws_urls[0]
    a = await Client.connect(url_a)
    first = await a.ask("hello before the crash")
    _assert_complete(first)
    session = a.session
    assert session is not None and first.route is not None
    await a.close()

    proc = cluster.process("gateway0")
    proc.kill()
    proc.wait(10)

    for _ in range(3):  # nginx may try the dead gateway first; it moves on after a refused connect
        c = await _resume(cluster.ws_url, session)
        try:
            assert c.session is not None and c.session["resumed"] is True
            assert c.session["route"]["worker"] == first.route["worker"]
            turn = await c.ask("hello after the crash")
            _assert_complete(turn)
            assert turn.route is not None and turn.route["decision"] == "bypass"
            session = c.session
        finally:
            await c.close()


def test_cluster_logs_stay_in_its_workdir(cluster: Any) -> None:
    logs = {p.name for p in Path(cluster.workdir).iterdir()}
    assert {"redis.log", "worker0.log", "worker1.log", "gateway0.log", "gateway1.log", "nginx"} <= logs
    assert (Path(cluster.workdir) / "nginx" / "access.log").stat().st_size > 0


def test_up_prints_the_lb_url_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """`python compose/local_cluster.py up` as an operator runs it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    require("redis-server")
    require("nginx")
    script = Path(__file__).resolve().parents[2] / "compose" / "local_cluster.py"
    proc = subprocess.Popen([sys.executable, str(script), "up", "--workdir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "ready on" in line:
                break
        match = re.search(r"ready on (http://127\.0\.0\.1:\d+/)", "".join(lines))
        assert match, "".join(lines)
        health = urllib.request.urlopen(match.group(1) + "healthz", timeout=5).read()
        assert b"ok" in health
        children = [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)],
                                                   capture_output=True, text=True).stdout.split()]
        assert len(children) == 6  # redis, 2 workers, 2 gateways, nginx
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 10
        alive = children
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if os.path.exists(f"/proc/{pid}") and
                     "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]
            time.sleep(0.1)
        assert not alive, f"still running after Ctrl-C: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
