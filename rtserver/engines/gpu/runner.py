"""The device side of the engine: the model, its KV cache, per-slot sampling state and
the decode step, replayed from CUDA graphs on a GPU.

All methods are called from the engine's step thread only.

Decode runs over slots ``0 … B-1`` with attention over positions ``0 … L-1``, where
B and L are rounded up to a bucket; on CUDA each (B, L) bucket is captured as one
CUDA graph at ``warm_up()`` (``mode="graphs"``), or the step is ``torch.compile``d with
``mode="reduce-overhead"`` (``mode="compile"``), or runs eagerly (``mode="eager"``,
the CPU default).

Sampling state lives on the device, one row per slot: temperature, top-p, penalty,
seed, step, the last token (the next decode input, never copied to the host and back)
and a ``seen`` bitmap [slots, vocab] for the repetition penalty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from rtserver.engines.base import SamplingParams
from rtserver.engines.gpu.model import Transformer
from rtserver.engines.gpu.sampling import sample

log = logging.getLogger("rtserver.engines.gpu")

DecodeMode = Literal["graphs", "compile", "eager"]


@dataclass(frozen=True, slots=True)
class DecodeStep:
    """A launched decode step: the slots it serves and where its tokens land on the host."""

    slots: list[int]
    copy: tuple[int, Tensor]


def buckets(limit: int, first: int, linear_from: int | None = None) -> list[int]:
    """Powers of two from ``first`` below ``limit`` (steps of ``linear_from/2`` past ``linear_from``), then ``limit``."""
    out, b = [], first
    while b < limit:
        out.append(b)
        b = b + linear_from // 2 if linear_from and b >= linear_from else b * 2
    return [*out, limit]


def bucket(value: int, sizes: Sequence[int]) -> int:
    return next(s for s in sizes if s >= value)


class Runner:
    def __init__(self, model: Transformer, *, slots: int, max_len: int, mode: DecodeMode) -> None:
        self.model = model
        self.slots = slots
        self.max_len = max_len
        self.device = model.output.weight.device
        if self.device.type != "cuda" and mode != "eager":
            mode = "eager"
        self.mode: DecodeMode = mode
        self.bucket_lengths = mode != "eager"  # attend over a bucketed KV length (stale positions masked)
        model.setup_cache(slots, max_len)
        self.batch_sizes = buckets(slots, 1)  # rows 0 … highest decoding slot (can exceed capacity)
        self.len_sizes = buckets(max_len, min(256, max_len), linear_from=1024)  # 256 512 1024 1536 2048 2560 …
        dev, v = self.device, model.args.vocab_size
        self.temperature = torch.zeros(slots, device=dev)
        self.top_p = torch.ones(slots, device=dev)
        self.penalty = torch.ones(slots, device=dev)
        self.seed = torch.zeros(slots, device=dev, dtype=torch.int64)
        self.step = torch.zeros(slots, device=dev, dtype=torch.int64)
        self.last = torch.zeros(slots, device=dev, dtype=torch.int64)
        self.seen = torch.zeros(slots, v, device=dev, dtype=torch.bool)
        self._host: dict[int, tuple[bool, bool, bool]] = {}  # slot -> (sampled, top_p, penalty)
        self._in_tok = torch.zeros(slots, device=dev, dtype=torch.int64)
        self._in_pos = torch.zeros(slots, device=dev, dtype=torch.int64)
        self._in_active = torch.zeros(slots, device=dev, dtype=torch.bool)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        cuda = self.device.type == "cuda"
        # 0 and 1 alternate between decode steps (one is launched before the previous one's tokens
        # are read); 2 is for reads done at once (prefill's first token)
        self._out_host = [torch.zeros(slots, dtype=torch.int64, pin_memory=cuda) for _ in range(3)]
        self._out_ready = [torch.cuda.Event() for _ in range(3)] if cuda else None  # type: ignore[no-untyped-call]
        self._turn = 0
        self._decode: Callable[[Tensor, Tensor, Tensor, int], Tensor] = model.decode
        if mode == "compile":
            self._decode = torch.compile(model.decode, mode="reduce-overhead", fullgraph=True, dynamic=False)

    # ------------------------------------------------------------------ per-slot state
    @torch.no_grad()
    def admit(self, slot: int, params: SamplingParams, seed: int, prompt: list[int]) -> None:
        """Set ``slot``'s sampling parameters for a new sequence whose prompt is ``prompt``."""
        sampled = params.temperature > 0
        top_p = sampled and params.top_p < 1.0
        pen = params.repetition_penalty != 1.0
        self._host[slot] = (sampled, top_p, pen)
        values = torch.tensor([params.temperature, params.top_p if top_p else 1.0, params.repetition_penalty])
        values = values.to(self.device, non_blocking=True)
        self.temperature[slot], self.top_p[slot], self.penalty[slot] = values[0], values[1], values[2]
        self.seed[slot] = seed & 0x7FFFFFFF
        self.step[slot] = 0
        if pen:
            self.seen[slot].zero_()
            self.seen[slot, torch.tensor(prompt, device=self.device)] = True

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def prefill(self, slot: int, tokens: list[int], start: int, last: bool) -> int | None:
        """Write ``tokens`` at ``start …`` of ``slot``; on the ``last`` chunk sample and return the first token."""
        ids = torch.tensor([tokens], device=self.device)
        logits = self.model.prefill(ids, slot, start)
        if not last:
            return None
        rows = slice(slot, slot + 1)
        return self._to_host(self._sample(logits, rows, [slot]))[0]

    def decode(self, positions: dict[int, int]) -> dict[int, int]:
        """One token for every slot in ``positions`` (slot -> position of its last token)."""
        return self.collect(self.launch(positions))

    @torch.no_grad()
    def launch(self, positions: dict[int, int]) -> DecodeStep:
        """Queue a decode step on the device and return at once (on CUDA); ``collect`` gives its tokens.

        The input token of each slot is its last sampled one, read on the device, so a step
        can be launched before the previous step's tokens reach the host. At most two steps
        may be outstanding (collect the older before launching a third).
        """
        b = bucket(max(positions) + 1, self.batch_sizes)
        need = max(positions.values()) + 1
        kv_len = bucket(need, self.len_sizes) if self.bucket_lengths else need
        graph = self._graph(b, kv_len) if self.mode == "graphs" else None  # a capture resets the inputs: first
        pos = [0] * b
        active = [False] * b
        for slot, p in positions.items():
            pos[slot], active[slot] = p, True
        host = torch.tensor(pos + [int(a) for a in active], dtype=torch.int64)
        host = host.pin_memory() if self.device.type == "cuda" else host
        both = host.to(self.device, non_blocking=True)
        self._in_pos[:b].copy_(both[:b])
        self._in_active[:b].copy_(both[b:].bool())
        self._in_tok[:b].copy_(self.last[:b])
        if graph is not None:
            graph[0].replay()
            logits = graph[1]
        else:
            logits = self._decode(self._in_tok[:b], self._in_pos[:b], self._in_active[:b], kv_len)
        tokens = self._sample(logits, slice(0, b), list(positions), self._in_active[:b])
        self.step[:b] += self._in_active[:b]
        self._turn = 1 - self._turn
        return DecodeStep(sorted(positions), self._start_copy(tokens, self._turn))

    def collect(self, step: DecodeStep) -> dict[int, int]:
        """Wait for ``step`` (an event wait on CUDA, which releases the GIL) and return slot -> token."""
        out = self._finish_copy(step.copy)
        return {slot: out[slot] for slot in step.slots}

    def _start_copy(self, tokens: Tensor, turn: int) -> tuple[int, Tensor]:
        if self._out_ready is None:
            return turn, tokens
        host = self._out_host[turn][: tokens.shape[0]]
        host.copy_(tokens, non_blocking=True)
        self._out_ready[turn].record()
        return turn, host

    def _finish_copy(self, copy: tuple[int, Tensor]) -> list[int]:
        turn, host = copy
        if self._out_ready is not None:
            self._out_ready[turn].synchronize()
        return [int(t) for t in host.tolist()]

    def _to_host(self, tokens: Tensor) -> list[int]:
        """The sampled tokens on the host, now."""
        return self._finish_copy(self._start_copy(tokens, 2))

    def _sample(self, logits: Tensor, rows: slice, slots: list[int], active: Tensor | None = None) -> Tensor:
        flags = [self._host.get(s, (False, False, False)) for s in slots]
        penalised = any(f[2] for f in flags)
        tokens = sample(
            logits, temperature=self.temperature[rows], top_p=self.top_p[rows], penalty=self.penalty[rows],
            seen=self.seen[rows] if penalised else None, seeds=self.seed[rows], steps=self.step[rows],
            any_sampled=any(f[0] for f in flags), any_top_p=any(f[1] for f in flags),
        )
        if active is not None:
            tokens = torch.where(active, tokens, self.last[rows])
        self.last[rows] = tokens
        if penalised:
            seen, index = self.seen[rows], tokens[:, None]
            mark = torch.ones_like(index, dtype=torch.bool) if active is None else active[:, None]
            seen.scatter_(1, index, seen.gather(1, index) | mark)  # rows not decoding keep their bits
        if active is None:
            self.step[rows] += 1
        return tokens

    # ------------------------------------------------------------------ CUDA graphs
    def _graph(self, b: int, kv_len: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        key = (b, kv_len)
        if key not in self._graphs:
            self._graphs[key] = self._capture(b, kv_len)
        return self._graphs[key]

    def _capture(self, b: int, kv_len: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        args = (self._in_tok[:b], self._in_pos[:b], self._in_active[:b].zero_(), kv_len)
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.model.decode(*args)  # warm-up outside the capture (allocator, cuBLAS handles)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool()):
            logits = self.model.decode(*args)
        return graph, logits

    def _pool(self) -> Any:
        if not hasattr(self, "_mempool"):
            self._mempool = torch.cuda.graph_pool_handle()
        return self._mempool

    @torch.no_grad()
    def warm_up(self, max_batch: int | None = None, max_kv: int | None = None) -> int:
        """Capture the CUDA graphs (or compile) ahead of serving; returns how many shapes were prepared."""
        if self.mode == "eager":
            return 0
        sizes = [s for s in self.batch_sizes if max_batch is None or s <= bucket(max_batch, self.batch_sizes)]
        lens = [n for n in self.len_sizes if max_kv is None or n <= bucket(max_kv, self.len_sizes)]
        for kv_len in lens:
            for b in sizes:
                if self.mode == "graphs":
                    self._graph(b, kv_len)
                else:
                    self._decode(self._in_tok[:b], self._in_pos[:b], self._in_active[:b].zero_(), kv_len)
        torch.cuda.synchronize()
        return len(sizes) * len(lens)
