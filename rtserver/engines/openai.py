"""The OpenAI-compatible engine: a worker in front of vLLM, SGLang, TGI, Ollama or llama.cpp.

Each request is one ``POST {base_url}/chat/completions`` with ``stream: true`` and
``stream_options: {include_usage: true}``; every server-sent ``data:`` chunk with a
content delta becomes one ``TokenEvent``, and the stream ends with one ``FinishEvent``
whose usage is the server's when it sent one, else counted here (completion = content
deltas, prompt = characters / 4).

Contract beyond ``Engine``:

* At most ``capacity`` requests are open against the server at once; the rest wait on
  a semaphore inside the worker, and that wait is the first token's ``queue_ms``.
* Closing the iterator (or cancelling its task) closes the HTTP connection, which is
  how these servers learn to abort a generation; the slot is free at once.
* Image attachments travel as data-URL ``image_url`` content parts of the last user
  message, only when ``"image"`` is among ``modalities``; other media are dropped
  (the gateway never sends a kind the worker did not declare).
* Transport failures and non-200 answers end the stream with reason ``"error"``;
  they never raise out of ``generate``. HTTP 429 and 503 say ``error: "overloaded"``,
  which the gateway turns into the client's retryable ``overloaded``.

Needs ``aiohttp`` (the ``openai`` extra).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from rtserver.engines.base import (
    EngineEvent,
    EngineFinish,
    EngineInfo,
    EngineLoad,
    FinishEvent,
    GenerateRequest,
    TokenEvent,
)
from rtserver.exceptions import EngineError

_FINISH: dict[str, EngineFinish] = {"stop": "stop", "length": "length", "eos": "stop", "tool_calls": "stop"}


class OpenAIEngine:
    def __init__(
        self,
        model: str,
        *,
        model_id: str | None = None,
        capacity: int = 16,
        base_url: str = "http://127.0.0.1:8080/v1",
        api_key: str = "",
        modalities: str | Iterable[str] = ("text",),
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        start_timeout_s: float = 60.0,
    ) -> None:
        """``model`` is the server's model name; ``model_id`` what gateways route on (default ``model``)."""
        mods = {m.strip() for m in (modalities.split(",") if isinstance(modalities, str) else modalities)}
        mods = {m for m in mods if m} | {"text"}
        self.info = EngineInfo(
            engine="openai", model_id=model_id or model, modalities=frozenset(mods), capacity=capacity
        )
        self._model = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._models_url = base_url.rstrip("/") + "/models"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._connect_timeout = connect_timeout_s
        self._read_timeout = read_timeout_s
        self._start_timeout = start_timeout_s
        self._slots = asyncio.Semaphore(capacity)
        self._session: Any = None
        self._active = 0
        self._waiting = 0

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open the connection pool and wait (up to ``start_timeout_s``) until the server answers."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout, sock_read=self._read_timeout)
        # Idle connections are dropped before common servers drop them (uvicorn: 5 s), so that a
        # pooled connection is rarely stale; _post retries once when one was.
        connector = aiohttp.TCPConnector(limit=self.info.capacity + 4, keepalive_timeout=4.0)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector, headers=self._headers)
        deadline = time.monotonic() + self._start_timeout
        last = "no answer"
        while True:
            try:
                async with self._session.get(self._models_url) as resp:
                    if resp.status < 500:
                        return  # up (401/404 on /models still proves a server is there)
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= deadline:
                await self.close()
                raise EngineError(f"OpenAI-compatible server at {self._models_url} is not reachable: {last}")
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def load(self) -> EngineLoad:
        return EngineLoad(active=self._active, waiting=self._waiting, capacity=self.info.capacity)

    # ----------------------------------------------------------------- requests
    def _body(self, request: GenerateRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in request.messages]
        images = [m for m in request.media if m.kind == "image"] if "image" in self.info.modalities else []
        if images:
            last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages) - 1)
            parts: list[dict[str, Any]] = [{"type": "text", "text": messages[last_user]["content"]}]
            for img in images:
                url = f"data:{img.mime};base64,{base64.b64encode(img.data).decode()}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
            messages[last_user] = {"role": messages[last_user]["role"], "content": parts}
        p = request.params
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        return body

    async def _post(self, session: Any, body: dict[str, Any]) -> Any:
        """POST, retrying once when a pooled keep-alive connection turns out closed by the server.

        Safe: a server that closed the connection never read the request, so nothing was generated.
        """
        import aiohttp

        try:
            return await session.post(self._url, json=body)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return await session.post(self._url, json=body)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]:
        import aiohttp

        session = self._session
        if session is None:
            raise EngineError("engine not started")
        enqueued = time.perf_counter()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        queue_ms = (time.perf_counter() - enqueued) * 1000.0
        self._active += 1
        prompt_est = sum(len(m.content) for m in request.messages) // 4 + 1
        deltas = 0
        usage: dict[str, Any] | None = None
        reason: EngineFinish | None = None
        resp: Any = None
        finished = False
        try:
            try:
                resp = await self._post(session, self._body(request))
                if resp.status != 200:
                    detail = (await resp.text())[:300]
                    # a busy server is the gateway's retryable "overloaded", like a full worker
                    why = "overloaded" if resp.status in (429, 503) else f"HTTP {resp.status}: {detail}"
                    finished = True
                    yield FinishEvent("error", 0, 0, queue_ms, error=why)
                    return
                async for data in _sse_data(resp.content):
                    if data == "[DONE]":
                        break
                    chunk = _json(data)
                    if chunk is None:
                        continue
                    if "error" in chunk and not chunk.get("choices"):
                        finished = True
                        yield FinishEvent("error", prompt_est, deltas, queue_ms, error=str(chunk["error"])[:300])
                        return
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            deltas += 1
                            yield TokenEvent(text, 1, queue_ms if deltas == 1 else None)
                        fr = choice.get("finish_reason")
                        if fr:
                            reason = _FINISH.get(fr, "stop")
            except (aiohttp.ClientError, TimeoutError) as exc:
                finished = True
                yield FinishEvent("error", prompt_est, deltas, queue_ms, error=f"{type(exc).__name__}: {exc}"[:300])
                return
            if reason is None:
                finished = True
                yield FinishEvent("error", prompt_est, deltas, queue_ms, error="stream ended without a finish reason")
                return
            prompt = int(usage.get("prompt_tokens") or prompt_est) if usage else prompt_est
            completion = int(usage.get("completion_tokens") or deltas) if usage else deltas
            finished = True
            yield FinishEvent(reason, prompt, completion, queue_ms)
        finally:
            if resp is not None:
                if finished:
                    resp.release()
                else:
                    resp.close()  # abort: dropping the connection is how the server learns to stop
            self._active -= 1
            self._slots.release()


async def _sse_data(stream: Any) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined with newlines)."""
    lines: list[str] = []
    async for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)


def _json(data: str) -> dict[str, Any] | None:
    import orjson

    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
