"""The engine interface every backend implements, and the records it speaks.

Contract:

* ``await start()`` loads and warms the model; ``generate`` may be called only after it.
* ``generate(request)`` is an async iterator of ``TokenEvent`` … ending with exactly one
  ``FinishEvent``. Closing the iterator early (``aclose()``, or cancelling the task that
  iterates it) cancels the request and frees its slot within one decode step.
* ``load()`` is cheap and non-blocking.
* ``await close()`` releases the model; pending generations end with reason ``"error"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

EngineFinish = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class MediaPart:
    """An attachment handed to a model that declared the modality."""

    kind: Literal["image", "audio", "file"]
    mime: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.15
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    request_id: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams = SamplingParams()
    media: tuple[MediaPart, ...] = ()
    # The start of the assistant's answer, already sent to the user: the model goes on
    # from there (used to continue a response whose worker died). Only engines whose
    # ``info.continues`` is True are given one.
    prefix: str = ""
    # The gateway's key for the conversation (its session id). Engines that retain KV
    # between turns (gpu) keep this request's KV under it for the next turn; others ignore it.
    conversation: str | None = None


@dataclass(frozen=True, slots=True)
class TokenEvent:
    text: str
    tokens: int = 1
    queue_ms: float | None = None  # set on the first token: time the request waited for a slot


@dataclass(frozen=True, slots=True)
class FinishEvent:
    reason: EngineFinish
    prompt_tokens: int
    completion_tokens: int
    queue_ms: float = 0.0
    error: str | None = None
    cached_tokens: int = 0  # prompt tokens whose KV was reused from the conversation's previous turn


EngineEvent = TokenEvent | FinishEvent


@dataclass(frozen=True, slots=True)
class EngineLoad:
    active: int
    waiting: int
    capacity: int


@dataclass(frozen=True, slots=True)
class EngineInfo:
    engine: str
    model_id: str
    modalities: frozenset[str] = field(default_factory=lambda: frozenset({"text"}))
    capacity: int = 16
    continues: bool = False  # honours GenerateRequest.prefix (can continue a broken answer)


@runtime_checkable
class Engine(Protocol):
    info: EngineInfo

    async def start(self) -> None: ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[EngineEvent]: ...

    def load(self) -> EngineLoad: ...

    async def close(self) -> None: ...
