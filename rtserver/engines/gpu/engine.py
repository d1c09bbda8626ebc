"""``GpuEngine``: the Engine protocol over the slotted model, its runner and step thread.

Contract beyond ``Engine`` (rtserver/engines/base.py):

* All model work runs on the scheduler's own thread; ``generate`` only tokenises (in
  the default executor), submits, and awaits events that the step thread hands over
  with one ``call_soon_threadsafe`` per event loop and step. The caller's loop never
  waits on the device, and any loop (not only the one that started the engine) may
  call ``generate``.
* ``capacity`` sequences run at once; later ones wait (``load().waiting``), and the
  wait is the first token's ``queue_ms``.
* ``GenerateRequest.conversation`` keys KV retention: the next turn of the same
  conversation reuses the longest common token prefix (``FinishEvent.cached_tokens``).
  ``kv_stats()`` reports retained tokens, hits, misses and evictions.
* Sampling honours temperature (0: greedy), top-p, repetition penalty and seed.
* ``GenerateRequest.prefix`` is appended to the templated prompt (``info.continues``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtserver.engines.base import (
    ChatMessage,
    EngineEvent,
    EngineInfo,
    EngineLoad,
    FinishEvent,
    GenerateRequest,
    SamplingParams,
)
from rtserver.engines.gpu.detok import Detokenizer
from rtserver.engines.gpu.runner import DecodeMode, Runner
from rtserver.engines.gpu.scheduler import Scheduler, Sequence
from rtserver.engines.gpu.slots import KvStats
from rtserver.exceptions import EngineError

log = logging.getLogger("rtserver.engines.gpu")


@dataclass(frozen=True, slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[EngineEvent]


def _deliver(items: list[tuple[asyncio.Queue[EngineEvent], EngineEvent]]) -> None:
    for q, event in items:
        q.put_nowait(event)


class GpuEngine:
    def __init__(
        self,
        model: str,
        *,
        model_id: str | None = None,
        capacity: int = 16,
        device: str | None = None,
        dtype: str | None = None,
        max_len: int = 4096,
        slots: int | None = None,
        prefill_chunk: int = 512,
        decode_mode: DecodeMode = "graphs",
        warm_up: bool = True,
    ) -> None:
        """``model``: a local Hugging Face folder (Llama or Qwen2 weights, tokenizer with a chat template).

        ``slots`` (default 2 × capacity) bounds running plus retained sequences, each of up
        to ``max_len`` positions of KV.
        """
        self._path = model
        self.info = EngineInfo(engine="gpu", model_id=model_id or Path(model).name, capacity=capacity, continues=True)
        self._device = device
        self._dtype = dtype
        self._max_len = max_len
        self._slots = max(slots or 2 * capacity, capacity)  # every running sequence needs a slot
        self._chunk = max(1, prefill_chunk)
        self._mode: DecodeMode = decode_mode
        self._warm = warm_up
        self._hf: Any = None
        self.tokenizer: Any = None
        self.runner: Runner | None = None
        self._sched: Scheduler | None = None

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, *, model_id: str, capacity: int = 16, **opts: Any) -> GpuEngine:
        """An engine on an already built transformers model and tokenizer (benchmarks with random weights)."""
        engine = cls(model_id, model_id=model_id, capacity=capacity, **opts)
        engine._hf, engine.tokenizer = model, tokenizer
        return engine

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._load)
        if self._warm:
            req = GenerateRequest("warm-up", (ChatMessage("user", "Say hello."),), SamplingParams(max_tokens=4))
            async for _ in self.generate(req):
                pass

    def _load(self) -> None:
        try:
            import torch
            import transformers as tf
        except ImportError as exc:
            raise EngineError(f"the gpu engine needs the 'gpu' extra (torch, transformers): {exc}") from exc
        from rtserver.engines.gpu.model import check_supported, from_hf

        hf = self._hf
        if hf is None:
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = getattr(torch, self._dtype) if self._dtype else (torch.bfloat16 if device != "cpu" else torch.float32)
            path = Path(self._path).expanduser()
            if not path.is_dir():
                raise EngineError(f"gpu engine: {path} is not a model folder")
            try:
                config = tf.AutoConfig.from_pretrained(path)
            except Exception as exc:
                raise EngineError(f"gpu engine could not read {path}/config.json: {exc}") from exc
            check_supported(config)
            try:
                self.tokenizer = tf.AutoTokenizer.from_pretrained(path)
                loaded: Any = tf.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
                hf = loaded.to(device)
            except Exception as exc:
                raise EngineError(f"gpu engine could not load {path}: {exc}") from exc
        model = from_hf(hf)
        eos = hf.generation_config.eos_token_id if hf.generation_config is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        eos_ids = set(eos) if isinstance(eos, (list, tuple)) else ({int(eos)} if eos is not None else set())
        self._hf = None  # our copy of the weights is all we need
        max_len = min(self._max_len, model.args.max_positions)
        self.runner = Runner(model, slots=self._slots, max_len=max_len, mode=self._mode)
        if self._warm:
            shapes = self.runner.warm_up()
            log.info("gpu engine: %s decode shapes prepared (%s)", shapes, self.runner.mode)
        self._sched = Scheduler(self.runner, self.tokenizer, eos_ids, self._publish, capacity=self.info.capacity,
                                prefill_chunk=self._chunk)
        self._sched.start()

    async def close(self) -> None:
        sched, self._sched = self._sched, None
        if sched is not None:
            await asyncio.get_running_loop().run_in_executor(None, sched.stop)
        self.runner = None

    def load(self) -> EngineLoad:
        running, waiting = self._sched.load() if self._sched is not None else (0, 0)
        return EngineLoad(active=running, waiting=waiting, capacity=self.info.capacity)

    def kv_stats(self) -> KvStats:
        """Retained tokens and conversations, hits, misses, evictions, reused tokens (thread-safe)."""
        if self._sched is None:
            return KvStats(0, 0, 0, 0, 0, 0)
        return self._sched.kv_stats()

    # ----------------------------------------------------------------- requests
    def _encode(self, request: GenerateRequest) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt += request.prefix
        ids: list[int] = self.tokenizer.encode(prompt, add_special_tokens=False)
        return ids

    def _publish(self, events: list[tuple[Any, EngineEvent]]) -> None:
        """Step thread: one wake-up per event loop for the whole step."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[EngineEvent], EngineEvent]]] = {}
        for stream, event in events:
            by_loop.setdefault(stream.loop, []).append((stream.queue, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop is closed: its consumers are gone
                pass

    async def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        sched = self._sched
        if sched is None or not sched.alive:
            raise EngineError("engine not started")
        loop = asyncio.get_running_loop()
        try:
            prompt = await loop.run_in_executor(None, self._encode, request)
        except Exception as exc:
            yield FinishEvent("error", 0, 0, 0.0, error=f"could not tokenise the prompt: {exc}")
            return
        p = request.params
        if not prompt or p.max_tokens < 1:
            yield FinishEvent("error", len(prompt), 0, 0.0, error="empty prompt" if not prompt else "max_tokens < 1")
            return
        seed = p.seed if p.seed is not None else random.getrandbits(31)
        stream = _Stream(loop, asyncio.Queue())
        seq = Sequence(prompt, p, request.conversation, seed, stream, Detokenizer(self.tokenizer))
        sched.submit(seq)
        finished = False
        try:
            while True:
                try:
                    event = await asyncio.wait_for(stream.queue.get(), 1.0)
                except TimeoutError:
                    if sched.alive:
                        continue
                    event = FinishEvent("error", len(prompt), 0, 0.0, error="engine stopped")
                finished = isinstance(event, FinishEvent)
                yield event
                if finished:
                    return
        finally:
            if not finished:
                sched.cancel(seq)
