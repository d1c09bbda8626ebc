"""Build an engine by name. Imports are lazy: a gateway never imports torch or OpenVINO.

Options are checked against the chosen engine's constructor: a misspelt or foreign
option is a ``ConfigError``, never silently dropped, and so is a value outside an
option's ``Literal`` annotation (the gpu engine's ``decode_mode``). The ``synthetic_*`` options are
the one exception: the worker CLI always passes them, and engines other than
``synthetic`` leave them out.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Literal

from rtserver.engines.base import Engine
from rtserver.exceptions import ConfigError

ENGINES = ("openvino", "transformers", "gpu", "openai", "synthetic")
SYNTHETIC_OPTIONS = ("synthetic_tokens", "synthetic_rate", "synthetic_first_token_ms")


def create_engine(name: str, *, model: str, model_id: str | None = None, capacity: int = 16, **opts: Any) -> Engine:
    if name == "synthetic":
        from rtserver.engines import synthetic

        _check(name, opts, SYNTHETIC_OPTIONS)
        return synthetic.SyntheticEngine(
            model_id=model_id or "synthetic",
            tokens=int(opts.get("synthetic_tokens", synthetic.DEFAULT_TOKENS)),
            tokens_per_s=float(opts.get("synthetic_rate", synthetic.DEFAULT_TOKENS_PER_S)),
            first_token_ms=float(opts.get("synthetic_first_token_ms", 0.0)),
            capacity=max(capacity, 1024),
        )
    opts = {k: v for k, v in opts.items() if k not in SYNTHETIC_OPTIONS}
    cls: Any
    if name == "openvino":
        from rtserver.engines.openvino import OpenVinoEngine

        cls = OpenVinoEngine
    elif name == "transformers":
        from rtserver.engines.transformers import TransformersEngine  # type: ignore[import-not-found,unused-ignore]

        cls = TransformersEngine
    elif name == "gpu":
        from rtserver.engines.gpu.engine import GpuEngine  # type: ignore[import-not-found,unused-ignore]

        cls = GpuEngine
    elif name == "openai":
        from rtserver.engines.openai import OpenAIEngine  # type: ignore[import-not-found,unused-ignore]

        cls = OpenAIEngine
    else:
        raise ConfigError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    params = inspect.signature(cls).parameters
    _check(name, opts, [p for p in params if p not in ("model", "model_id", "capacity")])
    _check_choices(name, cls, opts)
    engine: Engine = cls(model, model_id=model_id, capacity=capacity, **opts)
    return engine


def _check(name: str, opts: dict[str, Any], known: Any) -> None:
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ConfigError(f"the {name} engine takes no option {', '.join(unknown)}; it takes {', '.join(known) or 'none'}")


def _check_choices(name: str, cls: Any, opts: dict[str, Any]) -> None:
    """An option annotated ``Literal[...]`` in the engine's constructor takes one of those values."""
    hints = typing.get_type_hints(cls.__init__)
    for key, value in opts.items():
        hint = hints.get(key)
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            choices = ", ".join(map(str, typing.get_args(hint)))
            raise ConfigError(f"the {name} engine's {key} must be one of {choices}, not {value!r}")
