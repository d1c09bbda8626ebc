"""The GPU engine: a Hugging Face model folder on torch, with transformers' own continuous batching.

transformers' ``ContinuousBatchingManager`` (``model.init_continuous_batching()``) owns
one background thread that schedules, prefills and decodes every admitted request
(paged KV cache, prefix sharing, CUDA graphs where it decides so). This engine only
feeds it: ``add_request(..., streaming=True)`` per generation, a result handler that
the manager calls on our event loop (``call_soon_threadsafe``) with the cumulative
tokens, and ``cancel_request`` when the iterator is closed.

Contract beyond ``Engine``:

* At most ``capacity`` requests are inside the manager; later ones wait on a semaphore
  here, and that wait is the first token's ``queue_ms`` (as in the OpenVINO engine).
* Text is detokenised incrementally: the whole sequence is decoded and the new suffix
  sent, holding back an incomplete UTF-8 character.
* ``temperature`` and ``top_p`` apply per request (transformers' per-request logits
  processors); temperature 0 means greedy. ``repetition_penalty`` and ``seed`` are not
  supported by continuous batching and are ignored.
* A crashed manager thread ends every open stream with reason ``"error"``.
* ``GenerateRequest.prefix`` (an answer already partly sent) is appended to the
  templated prompt, so the model goes on from it (``info.continues``).

Runs on CUDA by default when available (bf16), else CPU (fp32) — the CPU path exists
for the shared contract tests with a tiny random model. Needs the ``gpu`` extra.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rtserver.engines.base import (
    ChatMessage,
    EngineEvent,
    EngineFinish,
    EngineInfo,
    EngineLoad,
    FinishEvent,
    GenerateRequest,
    SamplingParams,
    TokenEvent,
)
from rtserver.exceptions import EngineError

log = logging.getLogger("rtserver.engines.transformers")

_GREEDY_T = 1e-4  # the per-request temperature warper divides by T; this is argmax in effect


class TransformersEngine:
    def __init__(
        self,
        model: str,
        *,
        model_id: str | None = None,
        capacity: int = 16,
        device: str | None = None,
        dtype: str | None = None,
        attn_implementation: str = "sdpa",
        max_new_tokens: int = 256,
        page_size: int | None = None,
        num_blocks: int | None = None,
        max_batch_tokens: int | None = None,
        compile_level: int = 0,
        warm_up: bool = True,
        prefill_chunk: int | None = None,
    ) -> None:
        """``model`` is a local Hugging Face folder (config, weights, tokenizer with a chat template).

        ``prefill_chunk`` (the worker's ``--prefill-chunk``) sets ``max_batch_tokens`` unless that is given.
        """
        if max_batch_tokens is None and prefill_chunk:
            max_batch_tokens = int(prefill_chunk)
        self._path = model
        self.info = EngineInfo(
            engine="transformers", model_id=model_id or Path(model).name, capacity=capacity, continues=True
        )
        self._device = device
        self._dtype = dtype
        self._attn = attn_implementation
        self._max_new = max_new_tokens
        self._cb_opts = {"page_size": page_size, "num_blocks": num_blocks, "max_batch_tokens": max_batch_tokens}
        self._compile_level = compile_level
        self._warm = warm_up
        self._slots = asyncio.Semaphore(capacity)
        self.model: Any = None
        self.tokenizer: Any = None
        self._manager: Any = None
        self._eos: set[int] = set()
        self._sampling_keys: set[str] = set()
        self._active = 0
        self._waiting = 0
        self._counter = 0
        self._open: dict[str, asyncio.Queue[Any]] = {}

    @classmethod
    def from_objects(
        cls, model: Any, tokenizer: Any, *, model_id: str, capacity: int = 16, **opts: Any
    ) -> TransformersEngine:
        """An engine around an already built model and tokenizer (benchmarks with random weights)."""
        engine = cls(model_id, model_id=model_id, capacity=capacity, **opts)
        engine.model, engine.tokenizer = model, tokenizer
        return engine

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._load)
        if self._warm:
            req = GenerateRequest("warm-up", (ChatMessage("user", "Say hello."),), SamplingParams(max_tokens=4))
            async for _ in self.generate(req):
                pass

    def _load(self) -> None:
        try:
            import torch

            tf: Any = importlib.import_module("transformers")
            cb_module: Any = importlib.import_module("transformers.generation.configuration_utils")
        except ImportError as exc:
            raise EngineError(f"the transformers engine needs the 'gpu' extra (torch, transformers): {exc}") from exc
        if self.model is None:
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = (
                getattr(torch, self._dtype) if self._dtype else (torch.bfloat16 if device != "cpu" else torch.float32)
            )
            path = Path(self._path).expanduser()
            if not path.is_dir():
                raise EngineError(f"transformers engine: {path} is not a model folder")
            try:
                self.tokenizer = tf.AutoTokenizer.from_pretrained(path)
                self.model = tf.AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype, attn_implementation=self._attn
                ).to(device)
            except Exception as exc:
                raise EngineError(f"transformers could not load {path}: {exc}") from exc
        model = self.model
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos = set(eos) if isinstance(eos, (list, tuple)) else ({int(eos)} if eos is not None else set())
        gen = tf.GenerationConfig(
            max_new_tokens=self._max_new,
            do_sample=True,
            temperature=0.7,
            top_p=0.9,
            eos_token_id=sorted(self._eos) or -1,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        opts: dict[str, Any] = {k: v for k, v in self._cb_opts.items() if v is not None}
        if model.device.type == "cpu":  # no GPU memory to size the cache from
            opts = {"page_size": 32, "num_blocks": max(64, 16 * self.info.capacity), "max_batch_tokens": 1024, **opts}
        opts.update(per_request_processors=True, max_requests_per_batch=self.info.capacity)
        if self._compile_level:
            opts["default_compile_level"] = self._compile_level
        cb = cb_module.ContinuousBatchingConfig(**_known_fields(cb_module.ContinuousBatchingConfig, opts))
        self._manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        self._sampling_keys = set(getattr(self._manager.logit_processor, "supported_keys", {}) or {})
        self._manager.start()

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            await asyncio.get_running_loop().run_in_executor(None, _hard_stop, manager)
        for queue in list(self._open.values()):
            queue.put_nowait(None)  # wakes the stream, which then reports the closed engine

    def load(self) -> EngineLoad:
        return EngineLoad(active=self._active, waiting=self._waiting, capacity=self.info.capacity)

    # ----------------------------------------------------------------- requests
    def _encode(self, request: GenerateRequest) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt += request.prefix  # continue an answer already partly sent (another worker died)
        ids: list[int] = self.tokenizer.encode(prompt, add_special_tokens=False)
        return ids

    def _sampling(self, params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if "temperature" in self._sampling_keys:
            kwargs["temperature"] = float(params.temperature) if params.temperature > 0 else _GREEDY_T
        if "top_p" in self._sampling_keys:
            kwargs["top_p"] = float(params.top_p) if params.temperature > 0 else 1.0
        return kwargs

    async def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        if self._manager is None:
            raise EngineError("engine not started")
        enqueued = time.perf_counter()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        queue_ms = (time.perf_counter() - enqueued) * 1000.0
        self._active += 1
        self._counter += 1
        rid = f"{request.request_id}#{self._counter}"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        manager = self._manager
        ids: list[int] = []
        sent_chars = 0
        sent_ids = 0
        prompt_tokens = 0
        finished = False
        try:
            try:
                prompt = self._encode(request)
                prompt_tokens = len(prompt)
                self._open[rid] = queue
                manager.register_result_handler(rid, queue.put_nowait)  # before add_request: no output is missed
                accepted = manager.add_request(
                    prompt,
                    request_id=rid,
                    max_new_tokens=request.params.max_tokens,
                    streaming=True,
                    **self._sampling(request.params),
                )
            except Exception as exc:
                finished = True
                yield FinishEvent("error", prompt_tokens, 0, queue_ms, error=f"could not start generation: {exc}")
                return
            if accepted is None:
                finished = True
                yield FinishEvent("error", prompt_tokens, 0, queue_ms, error="engine is not accepting requests")
                return
            while True:
                try:
                    out = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    if self._manager is manager and manager.is_running():
                        continue
                    out = None
                if out is None:  # the manager thread is gone
                    finished = True
                    yield FinishEvent("error", prompt_tokens, len(ids), queue_ms, error="engine stopped")
                    return
                ids = list(out.generated_tokens)
                done = out.is_finished()
                if out.error is not None or (done and int(out.status) != 3):  # 3: RequestStatus.FINISHED
                    finished = True
                    yield FinishEvent("error", prompt_tokens, len(ids), queue_ms, error=str(out.error or "failed"))
                    return
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if done or not text.endswith("\ufffd"):  # else: an incomplete character, wait for more
                    new = text[sent_chars:]
                    if new:
                        sent_chars = len(text)
                        yield TokenEvent(new, len(ids) - sent_ids, queue_ms if sent_ids == 0 else None)
                        sent_ids = len(ids)
                if done:
                    reason: EngineFinish = (
                        "stop"
                        if ids and ids[-1] in self._eos
                        else ("length" if len(ids) >= request.params.max_tokens else "stop")
                    )
                    finished = True
                    yield FinishEvent(reason, prompt_tokens, len(ids), queue_ms)
                    return
        finally:
            self._open.pop(rid, None)
            if not finished and self._manager is manager:
                manager.cancel_request(rid)
            router = getattr(manager, "output_router", None)
            if router is not None:
                with router._lock:
                    router.result_handlers.pop(rid, None)
            self._active -= 1
            self._slots.release()


def _known_fields(cls: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` that this transformers version's config takes (older releases, 5.17 among them, call ``page_size`` ``block_size``)."""
    fields = set(inspect.signature(cls).parameters)
    if "page_size" in opts and "page_size" not in fields and "block_size" in fields:
        opts = {**opts, "block_size": opts["page_size"]}
    dropped = sorted(k for k in opts if k not in fields)
    if dropped:
        log.warning("this transformers version ignores continuous batching options %s", ", ".join(dropped))
    return {k: v for k, v in opts.items() if k in fields}


def _hard_stop(manager: Any) -> None:
    """Stop the manager thread now; requests still running are failed (their streams end with ``error``)."""
    try:
        manager.stop(block=True, timeout=10.0, hard_stop=True)
    except TypeError:  # a transformers without hard_stop
        manager.stop(block=True, timeout=10.0)
