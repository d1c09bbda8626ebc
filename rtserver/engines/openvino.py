"""The CPU engine: a GGUF model on openvino-genai's ContinuousBatchingPipeline.

One background thread owns the pipeline and runs its ``step()`` loop; the event loop
talks to it through a command queue (add, cancel) and receives each step's events in
one ``call_soon_threadsafe``. ``step()`` holds the GIL for the whole step, so on a loop
with a step gate (the engine host's, rtserver/engines/stepgate.py) the thread waits
for the loop to be idle before it takes the next commands and steps. Requests beyond
``capacity`` wait in a FIFO inside the engine (their ``queue_ms`` measures it); each
step decodes every active sequence.
Detokenisation is incremental and batched: after each step, one ``decode`` call covers
every sequence that got a token, each over a short window, and an incomplete UTF-8
character is held back until the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtserver.config import PREFILL_CHUNK  # the one default (measured; see there)
from rtserver.engines.base import (
    EngineEvent,
    EngineInfo,
    EngineLoad,
    FinishEvent,
    GenerateRequest,
    SamplingParams,
    TokenEvent,
)
from rtserver.engines.detok import TextStream, advance
from rtserver.engines.models import resolve_model
from rtserver.engines.stepgate import StepGate, gate_of
from rtserver.exceptions import EngineError

log = logging.getLogger("rtserver.engine.openvino")

_STOP = object()
MIN_PROMPT_TOKENS = 16  # prompt tokens a step can always take beside a full batch of decodes


def step_budget(capacity: int, prefill_chunk: int) -> int:
    """openvino's ``max_num_batched_tokens``: ``prefill_chunk``, raised to leave a token for
    every sequence that may decode plus ``MIN_PROMPT_TOKENS`` for prompts.

    The budget counts decode tokens too: below the number of running sequences, a step
    decodes only some of them (measured: 24 sequences under a budget of 16 got at most
    10 tokens a step, under 32 at most 19), and no prompt advances.
    """
    return max(int(prefill_chunk), capacity + MIN_PROMPT_TOKENS)


def scheduler_config(capacity: int, prefill_chunk: int, kv_cache_gb: float = 1.0) -> Any:
    """openvino's ``SchedulerConfig`` as this engine builds it (the benches' raw side uses it too):
    prefix caching, dynamic split-fuse, ``step_budget`` tokens a step."""
    import openvino_genai as og

    sc = og.SchedulerConfig()
    sc.cache_size = max(1, int(kv_cache_gb))
    sc.enable_prefix_caching = True
    sc.max_num_seqs = capacity
    sc.dynamic_split_fuse = True
    sc.max_num_batched_tokens = step_budget(capacity, prefill_chunk)
    return sc


def generation_config(params: SamplingParams) -> Any:
    """openvino's ``GenerationConfig`` for ``params`` (temperature 0: greedy). Our prompts come
    with the chat template already applied, so openvino must not apply it again."""
    import openvino_genai as og

    gc = og.GenerationConfig()
    gc.apply_chat_template = False
    gc.max_new_tokens = params.max_tokens
    gc.do_sample = params.temperature > 0
    if gc.do_sample:
        gc.temperature = params.temperature
        gc.top_p = params.top_p
    gc.repetition_penalty = params.repetition_penalty
    if params.seed is not None:
        gc.rng_seed = params.seed
    return gc


def _deliver(batch: list[tuple[_Job, EngineEvent]]) -> None:
    for job, event in batch:
        job.out.put_nowait(event)


@dataclass(slots=True)
class _Job:
    request: GenerateRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[EngineEvent]
    enqueued: float
    handle: Any = None
    text: TextStream = field(default_factory=TextStream)
    prompt_tokens: int = 0
    queue_ms: float = 0.0
    cancelled: bool = False


class OpenVinoEngine:
    def __init__(
        self,
        model: str,
        *,
        model_id: str | None = None,
        capacity: int = 16,
        kv_cache_gb: float = 1.0,
        device: str = "CPU",
        threads: int | None = None,
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> None:
        """``prefill_chunk``: tokens per step (``max_num_batched_tokens`` with dynamic split-fuse,
        see :func:`step_budget`), so a long prompt is prefilled in chunks between the other
        sequences' decode steps."""
        self._model = model
        self._prefill_chunk = step_budget(capacity, prefill_chunk)
        self.info = EngineInfo(engine="openvino", model_id=model_id or Path(model).stem, capacity=capacity,
                               continues=True)
        self._capacity = capacity
        self._kv_cache_gb = kv_cache_gb
        self._device = device
        self._threads = threads
        self._commands: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pipe: Any = None
        self._tok: Any = None
        self._active: dict[str, _Job] = {}
        self._waiting: deque[_Job] = deque()
        self._next_id = 0
        self._events: list[tuple[_Job, EngineEvent]] = []  # this turn's, delivered by _post()
        self._gate: StepGate | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._load)
        self._gate = gate_of(loop)
        self._thread = threading.Thread(target=self._run, name="openvino-engine", daemon=True)
        self._thread.start()
        await self._warm_up()

    def _load(self) -> None:
        import openvino_genai as og

        path = resolve_model(self._model)
        sc = scheduler_config(self._capacity, self._prefill_chunk, self._kv_cache_gb)
        props: dict[str, Any] = {}
        if self._threads:
            props["INFERENCE_NUM_THREADS"] = self._threads
        try:
            self._pipe = og.ContinuousBatchingPipeline(str(path), sc, self._device, props)
        except Exception as exc:
            raise EngineError(f"openvino could not load {path}: {exc}") from exc
        self._tok = self._pipe.get_tokenizer()

    async def _warm_up(self) -> None:
        from rtserver.engines.base import ChatMessage, SamplingParams

        req = GenerateRequest("warm-up", (ChatMessage("user", "Say hello."),), SamplingParams(max_tokens=8))
        async for _ in self.generate(req):
            pass
        # A prompt longer than one prefill chunk (up to 512 tokens): the chunk-sized step
        # is compiled now, not during the first long prompt a user sends.
        long = " ".join(f"w{i}" for i in range(min(self._prefill_chunk, 512) + 16))
        req = GenerateRequest("warm-up-chunk", (ChatMessage("user", long),), SamplingParams(max_tokens=2))
        async for _ in self.generate(req):
            pass

    async def close(self) -> None:
        if self._thread is not None:
            self._commands.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)
            self._thread = None

    def load(self) -> EngineLoad:
        return EngineLoad(active=len(self._active), waiting=len(self._waiting), capacity=self._capacity)

    # ----------------------------------------------------------------- requests
    async def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        if self._thread is None:
            raise EngineError("engine not started")
        loop = asyncio.get_running_loop()
        job = _Job(request=request, loop=loop, out=asyncio.Queue(), enqueued=time.perf_counter())
        self._commands.put(("add", job))
        finished = False
        try:
            while True:
                event = await job.out.get()
                yield event
                if isinstance(event, FinishEvent):
                    finished = True
                    return
        finally:
            if not finished:
                self._commands.put(("cancel", job))

    # ----------------------------------------------------------------- engine thread
    def _run(self) -> None:
        while True:
            try:
                if not self._turn():
                    return
            except Exception:  # a bug here must not leave every stream waiting forever
                log.exception("openvino engine thread: unexpected error; failing the active requests")
                self._fail_all("engine error")
                self._post()

    def _turn(self) -> bool:
        """One turn of the engine thread: take commands, admit, step, collect. False: stop."""
        if not self._active and not self._waiting and not self._take(self._commands.get()):  # idle: wait for work
            return False
        if self._gate is not None:
            self._gate.wait()  # the loop delivers the last step's tokens and queues what it has read
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                break
            if not self._take(cmd):
                return False
        self._admit()
        self._post()
        if not self._active:
            return True
        try:
            self._pipe.step()
        except Exception as exc:  # a broken step fails every sequence in it
            self._fail_all(f"engine step failed: {exc}")
        else:
            self._collect()
        self._post()
        return True

    def _take(self, cmd: Any) -> bool:
        """One command from the queue; False for the stop command (the pipeline is then shut down)."""
        if cmd is _STOP:
            self._shut_down()
            return False
        self._command(cmd)
        return True

    def _command(self, cmd: tuple[str, _Job]) -> None:
        kind, job = cmd
        if kind == "add":
            self._waiting.append(job)
        elif kind == "cancel":
            job.cancelled = True
            if job in self._waiting:
                self._waiting.remove(job)
                self._emit(job, FinishEvent("cancelled", job.prompt_tokens, len(job.text.ids), job.queue_ms))
            elif job.handle is not None:
                job.handle.cancel()

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self._capacity:
            job = self._waiting.popleft()
            messages = [{"role": m.role, "content": m.content} for m in job.request.messages]
            try:
                prompt = self._tok.apply_chat_template(messages, add_generation_prompt=True)
                prompt += job.request.prefix  # continue an answer already partly sent
                ids = self._tok.encode(prompt).input_ids  # once: counted here, given to the pipeline as is
                job.prompt_tokens = int(ids.get_shape()[-1])
                self._next_id += 1
                job.handle = self._pipe.add_request(self._next_id, ids, generation_config(job.request.params))
            except Exception as exc:
                self._emit(job, FinishEvent("error", 0, 0, error=f"could not start generation: {exc}"))
                continue
            job.queue_ms = (time.perf_counter() - job.enqueued) * 1000.0
            self._active[job.request.request_id + f"#{self._next_id}"] = job

    def _collect(self) -> None:
        import openvino_genai as og

        finished: list[tuple[str, _Job, str]] = []
        to_flush: list[tuple[_Job, bool]] = []
        for key, job in self._active.items():
            handle = job.handle
            reason: str | None = None
            fresh = False
            if handle.can_read():
                for output in handle.read().values():
                    job.text.ids.extend(output.generated_ids)
                    fresh = fresh or bool(output.generated_ids)
                    fr = output.finish_reason
                    if fr == og.GenerationFinishReason.STOP:
                        reason = "stop"
                    elif fr == og.GenerationFinishReason.LENGTH:
                        reason = "length"
            status = handle.get_status()
            if reason is None and status != og.GenerationStatus.RUNNING:
                if job.cancelled or status in (og.GenerationStatus.CANCEL, og.GenerationStatus.STOP):
                    reason = "cancelled"
                elif status == og.GenerationStatus.FINISHED:
                    reason = "stop"
                else:
                    reason = "error"
            if fresh or reason is not None:
                to_flush.append((job, reason is not None))
            if reason is not None:
                finished.append((key, job, "cancelled" if job.cancelled else reason))
        self._flush_texts(to_flush)
        for key, job, why in finished:
            self._emit(job, FinishEvent(why, job.prompt_tokens, len(job.text.ids), job.queue_ms))  # type: ignore[arg-type]
            del self._active[key]

    def _flush_texts(self, items: list[tuple[_Job, bool]]) -> None:
        """The new text of every job that got tokens this step (``True``: its last), from one decode call."""
        items = [(job, last) for job, last in items if job.text.ids and not job.cancelled]
        firsts = [job.text.sent_ids == 0 for job, _ in items]
        news = advance(self._tok.decode, [(job.text, last) for job, last in items])
        for (job, _), first, new in zip(items, firsts, news, strict=True):
            if new is not None:
                self._emit(job, TokenEvent(new[0], new[1], job.queue_ms if first else None))

    def _emit(self, job: _Job, event: EngineEvent) -> None:
        self._events.append((job, event))

    def _post(self) -> None:
        """Hand this turn's events to their event loop in one callback (one wake-up, not one per token)."""
        if not self._events:
            return
        events, self._events = self._events, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, EngineEvent]]] = {}
        for job, event in events:
            by_loop.setdefault(job.loop, []).append((job, event))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the event loop is gone
                pass

    def _shut_down(self) -> None:
        """Cancel every sequence and step until the pipeline has freed their KV blocks, then
        release it here, on its own thread (otherwise openvino reports the blocks as leaked)."""
        for job in self._active.values():
            job.cancelled = True
            job.handle.cancel()
        self._fail_all("engine closed")
        self._post()
        for _ in range(16):
            try:
                if not self._pipe.has_non_finished_requests():
                    break
                self._pipe.step()
            except Exception:  # a broken pipeline is released all the same
                break
        self._pipe = None
        self._tok = None

    def _fail_all(self, why: str) -> None:
        for job in list(self._active.values()) + list(self._waiting):
            if job.handle is not None:
                with contextlib.suppress(Exception):  # stop generating for it (the pipeline may be broken)
                    job.handle.cancel()
            self._emit(job, FinishEvent("error", job.prompt_tokens, len(job.text.ids), job.queue_ms, error=why))
        self._active.clear()
        self._waiting.clear()
