"""The step loop: admission, chunked prefill interleaved with batched decode, stop rules.

One thread runs ``Scheduler._loop``; everything else talks to it through a queue
(``submit``, ``cancel``, ``stop``), so callers never wait on the device. Each
iteration:

1. takes the commands queued since the last step (blocks only when nothing runs);
2. admits waiting sequences while fewer than ``capacity`` run and a slot is free
   (``SlotTable.acquire``: the conversation's retained KV, a free slot, or an evicted one);
3. prefills one chunk of the oldest sequence still prefilling: ``prefill_chunk``
   tokens while others decode, 4× that when none does; its last chunk yields the
   first token;
4. launches one batched decode step for every sequence past its prefill, then reads
   the previous step's tokens and turns them into events while the device computes;
5. hands the step's events to ``publish`` in one call.

A cancelled sequence leaves at the start of the next step, so its slot is free within
one step. A sequence with a conversation key leaves its KV retained in its slot.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtserver.engines.base import EngineEvent, EngineFinish, FinishEvent, SamplingParams, TokenEvent
from rtserver.engines.gpu.detok import Detokenizer
from rtserver.engines.gpu.runner import DecodeStep, Runner
from rtserver.engines.gpu.slots import KvStats, SlotTable

log = logging.getLogger("rtserver.engines.gpu")

Publish = Callable[[list[tuple[Any, EngineEvent]]], None]


@dataclass(eq=False, slots=True)
class Sequence:
    prompt: list[int]
    params: SamplingParams
    key: str | None
    seed: int
    sink: Any  # handed back with each event (the engine's stream)
    detok: Detokenizer
    submitted: float = 0.0
    slot: int = -1
    kv: int = 0  # positions of the slot whose KV is computed
    reused: int = 0
    queue_ms: float = 0.0
    generated: list[int] = field(default_factory=list)
    unsent: int = 0  # tokens whose text has not gone out yet
    sent_first: bool = False
    ahead: int = 0  # decode steps launched whose token has not been read yet


class Scheduler:
    def __init__(
        self, runner: Runner, tokenizer: Any, eos: set[int], publish: Publish, *,
        capacity: int, prefill_chunk: int = 512, clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos = eos
        self.publish = publish
        self.capacity = min(capacity, runner.slots)
        self.chunk = prefill_chunk
        self.clock = clock
        self.table = SlotTable(runner.slots)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._waiting: deque[Sequence] = deque()
        self._prefilling: list[Sequence] = []
        self._decoding: list[Sequence] = []
        self._lock = threading.Lock()
        self._queued = 0  # submitted, not yet admitted (read by load())
        self._thread: threading.Thread | None = None
        self._in_flight: tuple[DecodeStep, dict[int, Sequence]] | None = None
        self.steps = 0
        self.profile = {"decode_steps": 0, "decode_rows": 0, "decode_s": 0.0, "host_s": 0.0, "prefill_s": 0.0}

    # ------------------------------------------------------------------ any thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rtserver-gpu-step", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """End the loop; open sequences finish with ``error``. Blocks until the thread is gone."""
        self._inbox.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, seq: Sequence) -> None:
        seq.submitted = self.clock()
        with self._lock:
            self._queued += 1
        self._inbox.put(("submit", seq))

    def cancel(self, seq: Sequence) -> None:
        self._inbox.put(("cancel", seq))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def load(self) -> tuple[int, int]:
        """(running, waiting)."""
        with self._lock:
            return len(self._prefilling) + len(self._decoding), self._queued

    def kv_stats(self) -> KvStats:
        with self._lock:
            return self.table.stats()

    # ------------------------------------------------------------------ step thread
    def _loop(self) -> None:
        while True:
            events: list[tuple[Any, EngineEvent]] = []
            busy = self._waiting or self._prefilling or self._decoding or self._in_flight
            try:
                commands = [] if busy else [self._inbox.get()]
                while True:
                    commands.append(self._inbox.get_nowait())
            except queue.Empty:
                pass
            for kind, seq in commands:
                if kind == "stop":
                    self._fail_all(events, "engine stopped")
                    self.publish(events)
                    return
                if kind == "submit":
                    self._waiting.append(seq)
                else:
                    self._drop(seq)
            try:
                self._admit(events)
                self._prefill(events)
                self._decode(events)
                self.steps += 1
            except Exception as exc:  # a failed step fails what runs; the loop goes on
                log.exception("gpu engine step failed")
                self._fail_all(events, f"engine step failed: {type(exc).__name__}: {exc}", waiting=False)
            if events:
                self.publish(events)

    def _admit(self, events: list[tuple[Any, EngineEvent]]) -> None:
        while self._waiting and len(self._prefilling) + len(self._decoding) < self.capacity:
            seq = self._waiting[0]
            if len(seq.prompt) + 1 > self.runner.max_len:
                self._waiting.popleft()
                with self._lock:
                    self._queued -= 1
                msg = f"prompt of {len(seq.prompt)} tokens does not fit the context of {self.runner.max_len}"
                events.append((seq.sink, FinishEvent("error", len(seq.prompt), 0, 0.0, error=msg)))
                continue
            with self._lock:
                got = self.table.acquire(seq.key, seq.prompt)
                if got is None:
                    return
                self._waiting.popleft()
                self._queued -= 1
                seq.slot, seq.reused = got
                seq.kv = seq.reused
                seq.queue_ms = (self.clock() - seq.submitted) * 1000.0
                self._prefilling.append(seq)
            self.runner.admit(seq.slot, seq.params, seq.seed, seq.prompt)

    def _prefill(self, events: list[tuple[Any, EngineEvent]]) -> None:
        if not self._prefilling:
            return
        seq = self._prefilling[0]
        chunk = self.chunk if self._decoding else 4 * self.chunk
        part = seq.prompt[seq.kv : seq.kv + chunk]
        last = seq.kv + len(part) == len(seq.prompt)
        started = self.clock()
        token = self.runner.prefill(seq.slot, part, seq.kv, last)
        self.profile["prefill_s"] += self.clock() - started  # device time shows only when the chunk samples
        seq.kv += len(part)
        if token is not None:
            with self._lock:
                self._prefilling.pop(0)
                self._decoding.append(seq)
            self._on_token(seq, token, events)

    def _decode(self, events: list[tuple[Any, EngineEvent]]) -> None:
        """Launch the next decode step, then read and handle the previous one's tokens while
        the device computes (one step of lookahead; a sequence that stopped at the previous
        step has one wasted row in the next, whose token is dropped)."""
        started = self.clock()
        launched: tuple[DecodeStep, dict[int, Sequence]] | None = None
        rows = {seq.slot: seq for seq in self._decoding
                if len(seq.generated) + seq.ahead < seq.params.max_tokens and seq.kv + seq.ahead < self.runner.max_len}
        if rows:
            launched = (self.runner.launch({slot: seq.kv + seq.ahead for slot, seq in rows.items()}), rows)
            for seq in rows.values():
                seq.ahead += 1
        previous, self._in_flight = self._in_flight, launched
        if previous is None:
            return
        step, by_slot = previous
        tokens = self.runner.collect(step)
        decoded = self.clock()
        for slot, token in tokens.items():
            seq = by_slot[slot]
            seq.ahead -= 1
            if seq.slot != slot or seq not in self._decoding:
                continue  # it ended (or was cancelled) after this step was launched
            seq.kv += 1
            self._on_token(seq, token, events)
        p = self.profile
        p["decode_steps"] += 1
        p["decode_rows"] += len(tokens)
        p["decode_s"] += decoded - started
        p["host_s"] += self.clock() - decoded

    def _on_token(self, seq: Sequence, token: int, events: list[tuple[Any, EngineEvent]]) -> None:
        seq.generated.append(token)
        seq.unsent += 1
        if token in self.eos:
            self._finish(seq, "stop", events)
            return
        text = seq.detok.push(token)
        if text:
            events.append((seq.sink, TokenEvent(text, seq.unsent, None if seq.sent_first else seq.queue_ms)))
            seq.sent_first, seq.unsent = True, 0
        if len(seq.generated) >= seq.params.max_tokens or seq.kv >= self.runner.max_len:
            self._finish(seq, "length", events)

    def _finish(self, seq: Sequence, reason: EngineFinish, events: list[tuple[Any, EngineEvent]]) -> None:
        text = seq.detok.flush()
        if text or (seq.unsent and not seq.sent_first):
            events.append((seq.sink, TokenEvent(text, seq.unsent, None if seq.sent_first else seq.queue_ms)))
        events.append((seq.sink, FinishEvent(
            reason, len(seq.prompt), len(seq.generated), seq.queue_ms, cached_tokens=seq.reused,
        )))
        self._release(seq)

    def _release(self, seq: Sequence, keep: bool = True) -> None:
        with self._lock:
            if seq in self._prefilling:
                self._prefilling.remove(seq)
            if seq in self._decoding:
                self._decoding.remove(seq)
            computed = (seq.prompt + seq.generated)[: seq.kv]
            self.table.release(seq.slot, seq.key if keep else None, computed)
        seq.slot = -1

    def _drop(self, seq: Sequence) -> None:
        """A cancel: the consumer is gone, so no event is sent."""
        if seq in self._waiting:
            self._waiting.remove(seq)
            with self._lock:
                self._queued -= 1
        elif seq.slot >= 0:
            self._release(seq)

    def _fail_all(self, events: list[tuple[Any, EngineEvent]], error: str, waiting: bool = True) -> None:
        self._in_flight = None
        for seq in [*self._prefilling, *self._decoding]:
            events.append((seq.sink, FinishEvent("error", len(seq.prompt), len(seq.generated), seq.queue_ms,
                                                 error=error)))
            self._release(seq, keep=False)
        while waiting and self._waiting:
            seq = self._waiting.popleft()
            with self._lock:
                self._queued -= 1
            events.append((seq.sink, FinishEvent("error", len(seq.prompt), 0, 0.0, error=error)))
