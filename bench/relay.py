"""Relay ceiling: token frames/s one gateway process delivers, against a bare websockets server.

    python bench/relay.py [--window-s 4] [--conns 16] [--tokens 2000] [--repeat 3] [--encoding json msgpack]

Targets, each a separate server process pinned to one core, with the same client
process pinned to another core (``os.sched_setaffinity``):

* ``bare``: websockets + uvloop, answering each message with ``tokens`` token frames of
  the gateway's exact shape (same fields, same size, encoded per frame) and a ``done``.
* ``gateway-process``: ``rtserver serve`` with the synthetic engine unpaced
  (``--synthetic-rate 0``) in the default embedded worker *process* (worker IPC on a
  unix socket; the worker is pinned to the client's core).
* ``gateway-inproc``: the same with ``--embedded-mode inproc`` (no worker IPC).
* ``gateway-…@NAME=VALUE@…``: a gateway target run with ``--NAME VALUE`` settings, e.g.
  ``gateway-process@write-batch-frames=1`` (one frame per socket write: before batching).
* ``gateway-…+PATCH+…``: a gateway target with monkeypatches applied in the gateway
  process (``PATCHES`` below): each measures the effect of one proposed change to
  rtserver/ without editing it.

The full gateway path is measured: routing (bypass after the first message), worker
IPC, per-token stats, replay log, session writes, encoding, bounded outbox. The
client counts token frames and tokens (``seq_last`` merges count every token) that
arrive within the measurement window, after a warm-up. Results: bench/results/relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack
import orjson

from bench.common import (
    READY,
    cpus,
    gateway,
    min_median,
    pin,
    popen_python,
    read_json_line,
    run_uvloop,
    stop,
    table,
    wait_line,
    write_results,
)

PROTO = {"json": "rt.v1.json", "msgpack": "rt.v1.msgpack"}


def _encode(frame: dict[str, Any], encoding: str) -> str | bytes:
    if encoding == "json":
        return orjson.dumps(frame).decode()
    return msgpack.packb(frame, use_bin_type=True)  # type: ignore[no-any-return]


def _decode(data: str | bytes) -> Any:
    return orjson.loads(data) if isinstance(data, str) else msgpack.unpackb(data, raw=False)


# ------------------------------------------------------------------ proposed changes, as monkeypatches
def _patch_nometrics() -> None:
    """Upper bound of dropping the per-token Histogram.observe (token gap) from the hot path."""
    from rtserver import metrics

    init = metrics.Metrics.__init__

    class _Noop:
        def observe(self, _v: float) -> None:
            return None

    def patched(self: Any, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        self.token_gap_seconds = _Noop()

    metrics.Metrics.__init__ = patched  # type: ignore[method-assign]


def _patch_faststats() -> None:
    """ResponseClock.stamp building a plain slotted object instead of a frozen dataclass."""
    from rtserver.protocol import stats

    class FastTokenStats:
        __slots__ = ("elapsed_ms", "gap_ms", "queue_ms", "route_ms", "ttft_ms")

        def __init__(self, ttft_ms: float, gap_ms: float, route_ms: float, queue_ms: float, elapsed_ms: float) -> None:
            self.ttft_ms, self.gap_ms, self.route_ms, self.queue_ms, self.elapsed_ms = (
                ttft_ms,
                gap_ms,
                route_ms,
                queue_ms,
                elapsed_ms,
            )

    setattr(stats, "TokenStats", FastTokenStats)  # noqa: B010


def _patch_textbytes() -> None:
    """JSON frames sent as the bytes orjson produced (``ws.send(data, text=True)``), no str round trip."""
    from websockets.exceptions import ConnectionClosed

    from rtserver.server import connection

    async def _write(self: Any) -> None:
        ws, enc, outbox = self.ws, self.encoding, self.outbox
        try:
            while True:
                frame = await outbox.get()
                if frame.get("type") == "__close__":
                    await ws.close(*self._close)
                    return
                if enc == "json":
                    await ws.send(orjson.dumps(frame), text=True)
                else:
                    await ws.send(msgpack.packb(frame, use_bin_type=True))
        except ConnectionClosed:
            pass

    connection.Connection._write = _write  # type: ignore[method-assign]


def _patch_enginehost() -> None:
    """The embedded synthetic worker with its engine in an engine host process (``--engine-host process``)."""
    from rtserver.server.embedded import EmbeddedWorker

    command = EmbeddedWorker.command

    def patched(self: Any) -> list[str]:
        return [*command(self), "--engine-host", "process"]

    EmbeddedWorker.command = patched  # type: ignore[method-assign]


def _patch_oldworker() -> None:
    """The embedded worker run from another checkout (``RELAY_OLD_ROOT``): the code before a change, same run."""
    import os

    from rtserver.server.embedded import EmbeddedWorker

    root = os.environ["RELAY_OLD_ROOT"]
    command = EmbeddedWorker.command

    def patched(self: Any) -> list[str]:
        return ["env", f"PYTHONPATH={root}", *command(self)]

    EmbeddedWorker.command = patched  # type: ignore[method-assign]


def _patch_recordtoken() -> None:
    """Token frames built as ``Token``/``TokenStats`` records and encoded by ``to_wire`` (the generic
    record encoder) instead of the hot path's ``codec.token_values``: what the fast encoder saves."""
    from rtserver.protocol import machine
    from rtserver.protocol.codec import to_wire
    from rtserver.protocol.frames import Seam, Token, TokenStats

    def token_values(response_id: str, seq: int, text: str, stats: dict[str, float],
                     seam: dict[str, str] | None = None) -> dict[str, Any]:
        return to_wire(Token(response_id=response_id, seq=seq, text=text, stats=TokenStats(**stats),
                             seam=Seam(**seam) if seam else None))

    machine.token_values = token_values  # type: ignore[assignment]


def _patch_nobacklog() -> None:
    """No socket-backlog probe: token credit paid when the writer takes the frame (before issue 12's
    low-water rule), to measure what the probe costs."""
    from rtserver.server import connection

    connection.socket_backlog = lambda transport: None  # type: ignore[assignment]


def _run_from(root: str) -> None:
    import os

    os.environ["PYTHONPATH"] = root  # the embedded worker process
    sys.path.insert(0, root)
    for name in [m for m in sys.modules if m == "rtserver" or m.startswith("rtserver.")]:
        del sys.modules[name]  # bench.common imported this checkout's rtserver.runner


def _patch_oldroot() -> None:
    """The whole server, gateway and embedded worker, run from another checkout (``RELAY_OLD_ROOT``):
    the code before a change, measured in the same run as the code after it. Use it alone, against
    ``+newroot`` (this checkout, started the same way)."""
    import os

    _run_from(os.environ["RELAY_OLD_ROOT"])


def _patch_newroot() -> None:
    """This checkout, started exactly as ``+oldroot`` starts the other one (the fair "after")."""
    from bench.common import ROOT

    _run_from(str(ROOT))


PATCHES = {"nometrics": _patch_nometrics, "faststats": _patch_faststats, "textbytes": _patch_textbytes,
           "enginehost": _patch_enginehost, "oldworker": _patch_oldworker, "recordtoken": _patch_recordtoken,
           "oldroot": _patch_oldroot, "newroot": _patch_newroot, "nobacklog": _patch_nobacklog}


def serve_patched(patches: list[str], argv: list[str]) -> int:
    for name in patches:
        PATCHES[name]()
    from rtserver.cli import main as cli_main

    return cli_main(argv)


# ------------------------------------------------------------------ bare server
async def bare_server(tokens: int) -> None:
    """A plain websockets server that streams gateway-shaped frames; prints its port like rtserver."""
    import websockets

    words = ("lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ", "elit ")

    async def handler(ws: Any) -> None:
        enc = "msgpack" if ws.subprotocol == "rt.v1.msgpack" else "json"
        n = 0
        async for data in ws:
            frame = _decode(data)
            if frame.get("type") == "hello":
                await ws.send(
                    _encode(
                        {
                            "type": "session",
                            "session_id": "s_bench",
                            "resume_token": "x" * 32,
                            "resumed": False,
                            "limits": {},
                            "route": None,
                        },
                        enc,
                    )
                )
                continue
            n += 1
            rid = f"r_bench{n:08d}"
            t0 = time.perf_counter()
            await ws.send(
                _encode(
                    {
                        "type": "route",
                        "response_id": rid,
                        "message_id": frame["id"],
                        "use_case": "chat",
                        "model": "synthetic",
                        "worker": "embedded",
                        "decision": "bypass",
                        "confidence": 0.9,
                        "route_ms": 0.004,
                        "context_changed": False,
                    },
                    enc,
                )
            )
            last = t0
            for i in range(tokens):
                now = time.perf_counter()
                await ws.send(
                    _encode(
                        {
                            "type": "token",
                            "response_id": rid,
                            "seq": i,
                            "text": words[i % len(words)],
                            "stats": {
                                "ttft_ms": 0.123,
                                "gap_ms": round((now - last) * 1000, 3),
                                "route_ms": 0.004,
                                "queue_ms": 0.01,
                                "elapsed_ms": round((now - t0) * 1000, 3),
                            },
                        },
                        enc,
                    )
                )
                last = now
            await ws.send(
                _encode(
                    {
                        "type": "done",
                        "response_id": rid,
                        "finish_reason": "stop",
                        "last_seq": tokens - 1,
                        "usage": {"prompt_tokens": 10, "completion_tokens": tokens},
                        "stats": {
                            "ttft_ms": 0.1,
                            "total_ms": 1.0,
                            "tokens_per_s": 1.0,
                            "gap_p50_ms": 0.0,
                            "gap_p95_ms": 0.0,
                            "route_ms": 0.0,
                            "decision": "bypass",
                        },
                    },
                    enc,
                )
            )

    async with websockets.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=list(PROTO.values()),  # type: ignore[arg-type]
        compression=None,
        max_size=8 * 1024 * 1024,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"rtserver ready on http://127.0.0.1:{port}/  (bare websockets)", flush=True)
        await asyncio.Event().wait()


# ------------------------------------------------------------------ client
async def relay_client(url: str, encoding: str, conns: int, warmup: float, window: float) -> dict[str, Any]:
    from rtserver.client import Client

    clients = [await Client.connect(url, encoding=encoding, open_timeout=10.0) for _ in range(conns)]
    t_start = time.perf_counter()
    w0, w1 = t_start + warmup, t_start + warmup + window
    counts = {"frames": 0, "tokens": 0, "turns": 0, "merged": 0, "errors": 0}

    async def one(c: Client) -> None:
        ws = c.ws
        k = 0
        while time.perf_counter() < w1:
            k += 1
            await c.send({"type": "message", "id": f"m{k}", "text": "stream please"})
            while True:
                frame = _decode(await asyncio.wait_for(ws.recv(), 30.0))
                kind = frame["type"]
                if kind == "token":
                    now = time.perf_counter()
                    if w0 <= now < w1:
                        counts["frames"] += 1
                        last = frame.get("seq_last")
                        if last is not None:
                            counts["merged"] += 1
                            counts["tokens"] += last - frame["seq"] + 1
                        else:
                            counts["tokens"] += 1
                elif kind == "done":
                    counts["turns"] += 1
                    break
                elif kind == "error":
                    counts["errors"] += 1
                    if not frame.get("response_id"):
                        break

    await asyncio.wait_for(asyncio.gather(*(one(c) for c in clients)), warmup + window + 60.0)
    for c in clients:
        await c.close()
    return {**counts, "frames_per_s": counts["frames"] / window, "tokens_per_s": counts["tokens"] / window}


# ------------------------------------------------------------------ orchestration
def measure(
    target: str, encoding: str, args: argparse.Namespace, server_core: list[int], client_core: list[int]
) -> dict[str, Any]:
    client_args = [
        "bench/relay.py",
        "--role",
        "client",
        "--encoding",
        encoding,
        "--conns",
        str(args.conns),
        "--warmup-s",
        str(args.warmup_s),
        "--window-s",
        str(args.window_s),
    ]
    timeout = args.warmup_s + args.window_s + 120
    if target == "bare":
        server = popen_python(["bench/relay.py", "--role", "bare", "--tokens", str(args.tokens)], server_core)
        try:
            port = int(wait_line(server, READY, 30).group(1))
            client = popen_python([*client_args, "--url", f"ws://127.0.0.1:{port}/ws"], client_core)
            return dict(read_json_line(client, timeout))
        finally:
            stop(server)
    target, *settings = target.split("@")
    base, *patches = target.split("+")
    patches = ["nometrics", "faststats", "textbytes"] if patches == ["all"] else patches
    launcher = ("bench/relay.py", "--role", "serve", "--patch", ",".join(patches)) if patches else ("-m", "rtserver")
    flags = [
        "--embedded-engine",
        "synthetic",
        "--model-id",
        "synthetic",
        "--synthetic-rate",
        "0",
        "--synthetic-tokens",
        str(args.tokens),
        "--max-tokens",
        str(args.tokens),
        "--max-connections-per-ip",
        "10000",
        "--messages-per-second",
        "1000",
        "--message-burst",
        "1000",
    ]
    if base == "gateway-inproc":
        flags += ["--embedded-mode", "inproc"]
    for setting in settings:  # gateway-process@write-batch-frames=1: serve --write-batch-frames 1
        name, _, value = setting.partition("=")
        flags += [f"--{name}", value]
    with gateway(*flags, cores=server_core, worker_cores=client_core, launcher=launcher) as (_, port):
        client = popen_python([*client_args, "--url", f"ws://127.0.0.1:{port}/ws"], client_core)
        return dict(read_json_line(client, timeout))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--role", "serve"]:  # bench/relay.py --role serve --patch a,b serve FLAGS…
        return serve_patched([x for x in argv[3].split(",") if x], argv[4:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("main", "bare", "client", "serve"), default="main")
    p.add_argument("--url", default="")
    p.add_argument("--encoding", nargs="+", default=["json", "msgpack"])
    p.add_argument("--targets", nargs="+", default=["bare", "gateway-process", "gateway-inproc"])
    p.add_argument("--conns", type=int, default=16, help="concurrent streams")
    p.add_argument("--tokens", type=int, default=2000, help="tokens per response")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--window-s", type=float, default=4.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="relay", help="results file name under bench/results/")
    args = p.parse_args(argv)
    if args.role == "bare":
        run_uvloop(bare_server(args.tokens))
        return 0
    if args.role == "client":
        res = run_uvloop(relay_client(args.url, args.encoding[0], args.conns, args.warmup_s, args.window_s))
        print(orjson.dumps(res).decode(), flush=True)
        return 0

    avail = cpus()
    server_core, client_core = ([avail[0]], [avail[1]]) if len(avail) >= 2 else (avail, avail)
    pin(0, avail)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rep in range(args.repeat):
        for enc in args.encoding:
            for target in args.targets:
                res = measure(target, enc, args, server_core, client_core)
                runs.setdefault(enc, {}).setdefault(target, []).append(res)
                print(
                    f"run {rep + 1}/{args.repeat} {enc:8} {target:16} {res['frames_per_s']:>10,.0f} frames/s "
                    f"{res['tokens_per_s']:>10,.0f} tokens/s  merged {res['merged']}  errors {res['errors']}",
                    file=sys.stderr,
                    flush=True,
                )
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {}
    for enc, targets in runs.items():
        bare_med = statistics.median(r["tokens_per_s"] for r in targets.get("bare", [{"tokens_per_s": 0}]))
        bare_fmed = statistics.median(r["frames_per_s"] for r in targets.get("bare", [{"frames_per_s": 0}]))
        for target, results in targets.items():
            fr = min_median([r["frames_per_s"] for r in results])
            tk = min_median([r["tokens_per_s"] for r in results])
            ratio = tk["median"] / bare_med if bare_med else None
            fratio = fr["median"] / bare_fmed if bare_fmed else None
            summary.setdefault(enc, {})[target] = {
                "frames_per_s": fr,
                "tokens_per_s": tk,
                "ratio_to_bare_frames": fratio,
                "ratio_to_bare_tokens": ratio,
                "runs": results,
            }
            rows.append(
                [
                    enc,
                    target,
                    fr["min"],
                    fr["median"],
                    tk["min"],
                    tk["median"],
                    None if fratio is None else f"{fratio:.0%}",
                    None if ratio is None else f"{ratio:.0%}",
                ]
            )
    print(
        table(
            [
                "encoding",
                "target",
                "frames/s min",
                "frames/s median",
                "tokens/s min",
                "tokens/s median",
                "frames vs bare",
                "tokens vs bare",
            ],
            rows,
        )
    )
    path = write_results(
        args.out,
        {
            "params": {
                "conns": args.conns,
                "tokens": args.tokens,
                "warmup_s": args.warmup_s,
                "window_s": args.window_s,
                "repeat": args.repeat,
                "server_core": server_core,
                "client_core": client_core,
            },
            "results": summary,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
