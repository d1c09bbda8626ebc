"""Build an engine by name. Imports are lazy: a gateway never imports torch or OpenVINO."""

from __future__ import annotations

from typing import Any

from rtserver.engines.base import Engine
from rtserver.exceptions import ConfigError

ENGINES = ("openvino", "transformers", "gpu", "openai", "synthetic")


def create_engine(name: str, *, model: str, model_id: str | None = None, capacity: int = 16, **opts: Any) -> Engine:
    if name == "openvino":
        from rtserver.engines.openvino import OpenVinoEngine

        if opts.get("prefill_chunk"):
            return OpenVinoEngine(model, model_id=model_id, capacity=capacity, prefill_chunk=int(opts["prefill_chunk"]))
        return OpenVinoEngine(model, model_id=model_id, capacity=capacity)
    if name == "synthetic":
        from rtserver.engines.synthetic import SyntheticEngine

        return SyntheticEngine(
            model_id=model_id or "synthetic",
            tokens=int(opts.get("synthetic_tokens", 32)),
            tokens_per_s=float(opts.get("synthetic_rate", 50.0)),
            first_token_ms=float(opts.get("synthetic_first_token_ms", 0.0)),
            capacity=max(capacity, 1024),
        )
    if name == "transformers":
        from rtserver.engines.transformers import TransformersEngine  # type: ignore[import-not-found,unused-ignore]

        return TransformersEngine(model, model_id=model_id, capacity=capacity, **opts)  # type: ignore[no-any-return,unused-ignore]
    if name == "gpu":
        from rtserver.engines.gpu.engine import GpuEngine  # type: ignore[import-not-found,unused-ignore]

        return GpuEngine(model, model_id=model_id, capacity=capacity, **opts)  # type: ignore[no-any-return,unused-ignore]
    if name == "openai":
        from rtserver.engines.openai import OpenAIEngine  # type: ignore[import-not-found,unused-ignore]

        return OpenAIEngine(model, model_id=model_id, capacity=capacity, **opts)  # type: ignore[no-any-return,unused-ignore]
    raise ConfigError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
