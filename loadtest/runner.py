"""Drive N concurrent conversations against one WebSocket URL; every wait is bounded.

``run_load(config)`` opens conversations at ``ramp`` per second, each playing
``turns`` turns of a scenario (round robin over the scenarios) with ``think_ms``
between turns, and stops everything at ``duration_s``: a turn still streaming
then is counted as cut, not as an error. Returns the report dict of
:func:`loadtest.report.summarize`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from loadtest.report import ConnectionStats, TurnRecord, percentile, record_turn, summarize
from loadtest.scenario import Scenario, load_scenarios
from rtserver.client import Client


@dataclass(frozen=True)
class LoadConfig:
    url: str = "ws://127.0.0.1:8000/ws"
    conversations: int = 4  # defaults that fit a CPU worker (tens of tokens/s in all)
    turns: int = 2
    ramp: float = 50.0  # conversations opened per second; <= 0 opens all at once
    think_ms: float = 0.0
    encoding: str = "json"
    duration_s: float = 300.0  # hard cap on the whole run
    turn_timeout_s: float = 60.0  # longest silence within a turn
    connect_timeout_s: float = 10.0
    scenarios: tuple[str, ...] = ()
    progress_every_s: float = 1.0  # 0: no progress lines
    # One share of a run split over processes (loadtest.multiproc): this run plays the
    # conversations index_offset, index_offset + index_stride, ... of ``conversations``,
    # each at its global ramp slot after ``start_at`` (time.time(); 0: now).
    index_offset: int = 0
    index_stride: int = 1
    start_at: float = 0.0

    def __post_init__(self) -> None:
        if self.conversations < 1 or self.turns < 1:
            raise ValueError("conversations and turns must be at least 1")
        if self.encoding not in ("json", "msgpack"):
            raise ValueError("encoding must be json or msgpack")
        if self.duration_s <= 0 or self.turn_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.index_stride < 1 or not 0 <= self.index_offset < self.index_stride:
            raise ValueError("index_offset must be in 0 .. index_stride - 1")

    @property
    def indices(self) -> range:
        """The conversation indices this run plays."""
        return range(self.index_offset, self.conversations, self.index_stride)


@dataclass
class RunParts:
    """What one run (or one process's share) saw, before summarising; picklable.

    Times are seconds from the run's start. ``merge`` folds shares into one, so the
    percentiles of the whole come from every raw sample (never averaged).
    """

    records: list[TurnRecord]
    conns: ConnectionStats
    wall_s: float  # start -> end of the last finished turn
    elapsed_s: float  # start -> end of the run
    capped: bool  # the duration cap cut a turn or kept one from being sent

    @staticmethod
    def merge(parts: list[RunParts]) -> RunParts:
        conns = ConnectionStats()
        for p in parts:
            conns.add(p.conns)
        records = sorted((r for p in parts for r in p.records), key=lambda r: (r.conversation, r.index))
        return RunParts(records, conns, max((p.wall_s for p in parts), default=0.0),
                        max((p.elapsed_s for p in parts), default=0.0), any(p.capped for p in parts))

    def report(self, config: LoadConfig, scenario_names: list[str]) -> dict[str, Any]:
        cfg = asdict(config)
        for key in ("index_offset", "index_stride", "start_at"):
            cfg.pop(key)
        cfg["scenarios"] = scenario_names
        return summarize(self.records, self.conns, wall_s=self.wall_s, config=cfg, elapsed_s=self.elapsed_s,
                         planned=config.conversations * config.turns, capped=self.capped)


@dataclass
class _Live:
    open: int = 0
    turns: int = 0
    errors: int = 0
    ttft: deque[float] = field(default_factory=lambda: deque(maxlen=200))


class LoadRun:
    def __init__(self, config: LoadConfig, scenarios: list[Scenario] | None = None) -> None:
        self.cfg = config
        self.scenarios = scenarios or load_scenarios(list(config.scenarios) or None)
        self.records: list[TurnRecord] = []
        self.conns = ConnectionStats()
        self.live = _Live()
        self._deadline = 0.0
        self._last_end = 0.0
        self._capped = False

    def _remaining(self) -> float:
        return self._deadline - time.perf_counter()

    async def run(self, progress: TextIO | None = sys.stderr) -> dict[str, Any]:
        """Play the whole run and return its report (``summarize``)."""
        parts = await self.run_parts(progress)
        return parts.report(self.cfg, [s.name for s in self.scenarios])

    async def run_parts(self, progress: TextIO | None = sys.stderr) -> RunParts:
        """Play this run's conversations (``cfg.indices``) and return what it saw."""
        cfg = self.cfg
        if cfg.start_at > 0:
            await asyncio.sleep(max(0.0, cfg.start_at - time.time()))
        t0 = time.perf_counter()
        self._deadline = t0 + cfg.duration_s
        self._last_end = t0
        reporter = None
        if progress is not None and cfg.progress_every_s > 0:
            reporter = asyncio.create_task(self._progress(progress, t0))
        try:
            tasks = [asyncio.create_task(self._conversation(i, t0)) for i in cfg.indices]
            # Each task bounds itself by the deadline; the outer cap only guards against a bug.
            _, pending = await asyncio.wait(tasks, timeout=cfg.duration_s + cfg.connect_timeout_s + 5.0)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                self._print_progress(progress, t0)
        ended = time.perf_counter()
        return RunParts(self.records, self.conns, self._last_end - t0, ended - t0, self._capped)

    # ------------------------------------------------------------ conversations
    async def _conversation(self, i: int, t0: float) -> None:
        cfg = self.cfg
        start = t0 + (i / cfg.ramp if cfg.ramp > 0 else 0.0)
        if start >= self._deadline:
            self.conns.not_started += 1
            self._capped = True
            return
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        timeout = min(cfg.connect_timeout_s, max(0.001, self._remaining()))
        try:
            async with asyncio.timeout(timeout):
                client = await Client.connect(
                    cfg.url, encoding=cfg.encoding, open_timeout=timeout, hello={"client": "rtserver-load/0.1"}
                )
        except Exception as exc:  # any failure to open is a counted outcome, not a crash
            self.conns.failed += 1
            self.conns.failures[_failure_name(exc)] += 1
            self.live.errors += 1
            return
        self.conns.opened += 1
        self.live.open += 1
        scenario = self.scenarios[i % len(self.scenarios)]
        try:
            for t in range(cfg.turns):
                if self._remaining() <= 0:
                    self._capped = True
                    break
                record = await self._turn(client, i, t, scenario)
                if record is None:
                    break  # cut by the deadline
                self.records.append(record)
                self._last_end = max(self._last_end, time.perf_counter())
                self.live.turns += record.completed
                self.live.errors += len(record.errors)
                if record.ttft_client_ms is not None:
                    self.live.ttft.append(record.ttft_client_ms)
                if record.finish_reason is None:
                    break  # no done: the socket is in an unknown state
                if cfg.think_ms > 0 and t + 1 < cfg.turns:
                    await asyncio.sleep(min(cfg.think_ms / 1000.0, max(0.0, self._remaining())))
        finally:
            self.live.open -= 1
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 2.0)

    async def _turn(self, client: Client, conv: int, index: int, scenario: Scenario) -> TurnRecord | None:
        st = scenario.turn(index)
        atts = [client.attachment(a.kind, a.mime, a.data) for a in st.attachments]
        route: dict[str, Any] | None = None
        tokens: list[dict[str, Any]] = []
        times: list[float] = []
        done: dict[str, Any] | None = None
        errors: list[dict[str, Any]] = []
        extra: list[str] = []
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(max(0.001, self._remaining())):
                mid = await client.send_message(st.text, attachments=atts, context=st.context)
                async for frame in client.stream(mid, timeout=self.cfg.turn_timeout_s):
                    now = time.perf_counter()
                    kind = frame.get("type")
                    if kind == "token":
                        tokens.append(frame)
                        times.append(now)
                    elif kind == "route":
                        route = frame
                    elif kind == "done":
                        done = frame
                    elif kind == "error":
                        errors.append(frame)
        except TimeoutError:
            if self._remaining() <= 0:
                self.conns.turns_cut += 1
                self._capped = True
                return None
            extra.append("turn_timeout")
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            extra.append(f"closed_{code}")
        ended = time.perf_counter()
        return record_turn(
            conv,
            index,
            sent_at=sent,
            ended_at=ended,
            route=route,
            tokens=tokens,
            token_times=times,
            done=done,
            errors=errors,
            extra_errors=extra,
        )

    # ------------------------------------------------------------ progress
    async def _progress(self, out: TextIO, t0: float) -> None:
        while True:
            await asyncio.sleep(self.cfg.progress_every_s)
            self._print_progress(out, t0)

    def _print_progress(self, out: TextIO | None, t0: float) -> None:
        if out is None:
            return
        p50 = percentile(list(self.live.ttft), 0.5)
        ttft = "-" if p50 is None else f"{p50:.1f} ms"
        print(
            f"[{time.perf_counter() - t0:6.1f}s] open {self.live.open}  turns {self.live.turns}  "
            f"errors {self.live.errors}  ttft p50 {ttft}",
            file=out,
            flush=True,
        )


def _failure_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect_timeout"
    if isinstance(exc, ConnectionRefusedError) and ":" in str(exc):
        return str(exc).split(":", 1)[0]  # the server's fatal error code
    if isinstance(exc, InvalidHandshake | InvalidURI):
        return "handshake_failed"
    if isinstance(exc, OSError):
        return "connect_failed"
    return type(exc).__name__


async def run_load(config: LoadConfig, progress: TextIO | None = sys.stderr) -> dict[str, Any]:
    return await LoadRun(config).run(progress)
