"""What the gateway uses of the router, and what the router uses of a classifier.

Typed protocols and the classifier's verdict record, importing nothing heavy: the
gateway (and mypy) see the contract without loading onnxruntime, numpy or the
tokenizer, which only ``rtserver.routing.classifier`` needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rtserver.routing.router import RouteDecision, RouteState
    from rtserver.routing.signals import CueLexicon

__all__ = ["Classification", "Classifier", "GatewayRouter"]


@dataclass(frozen=True, slots=True)
class Classification:
    """One classifier verdict. ``probabilities`` covers every label and sums to 1."""

    use_case: str
    confidence: float
    probabilities: Mapping[str, float]
    elapsed_ms: float


class Classifier(Protocol):
    """What ``Router`` needs from a classifier; ``IntentClassifier`` is the real one."""

    @property
    def lexicon(self) -> CueLexicon: ...

    def classify(self, text: str) -> Classification: ...


class GatewayRouter(Protocol):
    """What the gateway needs from a router; ``rtserver.routing.router.Router`` is the real one.

    ``route`` raises ``InvalidRouteOverride`` (wire code ``invalid_route_override``)
    for a bad ``context.use_case``; any other ``RouteError`` is a server fault.
    """

    async def route(
        self,
        state: RouteState | None,
        text: str,
        attachment_kinds: Sequence[str],
        context: Mapping[str, object] | None,
    ) -> RouteDecision: ...
