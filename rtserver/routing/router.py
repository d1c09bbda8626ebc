"""Per-message routing with smart bypass.

A conversation is routed once, on its first message, and then pinned: every
later message *bypasses* routing (no model call, a few microseconds) unless its
signals show something the current route was not decided on. The route keeps a
*basis*: the modalities, cue classes and context key seen when it was decided.

Rules, in order, for ``Router.route(state, text, attachment_kinds, context)``:

1. **Client override.** ``context["use_case"]`` (one of the five use cases;
   ``None`` counts as absent, anything else raises ``InvalidRouteOverride``)
   forces the use case with confidence 1.0 and no classifier call: decision
   ``"full"`` without a prior route, ``"bypass"`` when it matches the current
   use case, ``"reroute"`` when it changes it. The override applies to the
   message that carries it; a gateway whose client context is sticky should pass
   it on every call. Other context keys make up ``Signals.context_key``.
2. **First message** (``state is None``): classify; decision ``"full"``.
3. **Bypass** when ``decide_bypass`` holds: no modality outside the basis, no cue
   class outside ``{use_case} | basis_cues``, the same context key (and
   ``bypass_enabled``). Decision ``"bypass"``, ``classifier_ms is None``.
4. **Something new**: classify. A different use case -> ``"reroute"`` with a
   fresh basis, provided the verdict is *corroborated*: the new use case is one
   of the message's cue classes, or the classifier's confidence is at least
   ``reroute_confidence`` (default 0.8). Otherwise, or when the verdict is the
   current use case, -> ``"bypass"`` with ``context_changed=True`` and the basis
   widened by the new signals (so the same novelty does not cost a model call
   twice). Corroboration keeps a short, ambiguous follow-up ("how should I parse
   the dates? 03/11/2024") from pulling a conversation off its worker on a weak
   standalone guess.

**Media rule.** A message carrying an image or audio (incl. video) attachment
needs a worker that can take it, so wherever rules 2 and 4 would classify, it
is routed to ``multimodal`` with confidence 1.0 and no classifier call. Only
the client override (rule 1) beats it.

**Fast rule.** With ``batching`` set, the classifier runs behind a bounded queue
(``ClassifierBatcher``: padded batches of arrivals on ``batching.threads`` threads).
When that queue is full, or a message waited past ``batching.max_wait_s``, the
message is routed by its fast signals alone: decision ``"fast"``, confidence 0 for
a first message (use case: its one cue class, else ``chat``; see ``fast_use_case``),
and a later message keeps its route and basis (so its novelty is classified with a
later message). ``classifier_ms`` is ``None``.

Classification runs in ``executor`` (``loop.run_in_executor``), never on the
event loop. Nothing here does I/O; ``RouteState`` round-trips through plain JSON
types for the session store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rtserver.exceptions import InvalidRouteOverride, RouteError
from rtserver.routing.batching import BatchClassifier, BatchSettings, ClassifierBatcher
from rtserver.routing.contract import Classification, Classifier
from rtserver.routing.signals import OVERRIDE_KEY, Signals, extract_signals
from rtserver.routing.usecases import MEDIA_MODALITIES, USE_CASE_SET, USE_CASES

__all__ = [
    "Classifier",
    "InvalidRouteOverride",
    "InvalidRouteState",
    "RouteDecision",
    "RouteState",
    "Router",
    "parse_override",
]

Decision = Literal["full", "bypass", "reroute", "fast"]
_MODALITIES = frozenset({"text", "image", "audio", "file"})


class InvalidRouteState(RouteError, ValueError):
    """A stored ``RouteState`` dict is malformed or names an unknown use case."""


class _RowByRow:
    """``classify_batch`` for a classifier that only has ``classify``."""

    __slots__ = ("_classifier",)

    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier

    def classify_batch(self, texts: Sequence[str]) -> list[Classification]:
        return [self._classifier.classify(t) for t in texts]


def fast_use_case(cues: frozenset[str]) -> str:
    """The use case of a message routed by its fast signals alone (decision ``"fast"``):
    its cue class when the text has exactly one, else ``"chat"``."""
    if len(cues) == 1:
        (only,) = cues
        return only
    return "chat"


@dataclass(frozen=True, slots=True)
class RouteState:
    """What a session stores about its route; ``to_dict``/``from_dict`` use plain JSON types.

    ``context_hash`` hashes the whole context last routed with (override
    included; ``""`` when none). ``basis_*`` are the signals the current route was
    decided on; ``basis_cues`` always contains ``use_case``. With
    ``bypass_enabled=False`` every message is classified (for comparisons).
    """

    use_case: str
    model_id: str
    confidence: float
    context_hash: str
    basis_modalities: frozenset[str]
    basis_cues: frozenset[str]
    basis_context_key: str
    bypass_enabled: bool = True

    def to_dict(self) -> dict[str, object]:
        return {
            "use_case": self.use_case,
            "model_id": self.model_id,
            "confidence": self.confidence,
            "context_hash": self.context_hash,
            "basis_modalities": sorted(self.basis_modalities),
            "basis_cues": sorted(self.basis_cues),
            "basis_context_key": self.basis_context_key,
            "bypass_enabled": self.bypass_enabled,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> RouteState:
        """Inverse of ``to_dict``; raises ``InvalidRouteState`` on anything it would not have written."""
        try:
            use_case = raw["use_case"]
            model_id = raw["model_id"]
            confidence = raw["confidence"]
            context_hash = raw["context_hash"]
            modalities = raw["basis_modalities"]
            cues = raw["basis_cues"]
            basis_key = raw["basis_context_key"]
            bypass = raw.get("bypass_enabled", True)
        except KeyError as exc:
            raise InvalidRouteState(f"route state lacks {exc.args[0]!r}") from None
        if use_case not in USE_CASE_SET or not isinstance(use_case, str):
            raise InvalidRouteState(f"unknown use case {use_case!r}")
        if not isinstance(model_id, str) or not isinstance(context_hash, str) or not isinstance(basis_key, str):
            raise InvalidRouteState("model_id, context_hash and basis_context_key must be strings")
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise InvalidRouteState("confidence must be a number")
        if not isinstance(bypass, bool):
            raise InvalidRouteState("bypass_enabled must be a boolean")
        if not isinstance(modalities, list) or not set(modalities) <= _MODALITIES:
            raise InvalidRouteState(f"basis_modalities must be a list drawn from {sorted(_MODALITIES)}")
        if not isinstance(cues, list) or not set(cues) <= USE_CASE_SET:
            raise InvalidRouteState("basis_cues must be a list of use cases")
        return cls(
            use_case=use_case,
            model_id=model_id,
            confidence=float(confidence),
            context_hash=context_hash,
            basis_modalities=frozenset(modalities),
            basis_cues=frozenset(cues) | {use_case},
            basis_context_key=basis_key,
            bypass_enabled=bypass,
        )


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The outcome of one ``Router.route`` call; store ``state`` for the conversation's next message.

    ``classifier_ms`` is ``None`` when the model did not run (bypass, override,
    media rule). ``context_changed`` is true when the message's signals fell
    outside the route's basis (always false for ``"full"``).
    """

    decision: Decision
    use_case: str
    model_id: str
    confidence: float
    context_changed: bool
    route_ms: float
    classifier_ms: float | None
    state: RouteState


def parse_override(context: Mapping[str, object] | None) -> str | None:
    """The client's forced use case, ``None`` when absent (or null); raises ``InvalidRouteOverride``."""
    if not context:
        return None
    value = context.get(OVERRIDE_KEY)
    if value is None:
        return None
    if not isinstance(value, str) or value not in USE_CASE_SET:
        raise InvalidRouteOverride(f"use_case must be one of {', '.join(USE_CASES)}; got {value!r}")
    return value


def _full_context_hash(context: Mapping[str, object] | None, key: str) -> str:
    """``key`` (the context minus the override), with the override appended when present."""
    override = context.get(OVERRIDE_KEY) if context else None
    return key if override is None else f"{key}:{override}"


class Router:
    """Routes messages to use cases and model ids; one instance serves every conversation.

    ``models`` maps each of the five use cases to a model id (``ValueError`` if
    one is missing or an unknown one is present). ``executor`` runs the blocking
    classifier (``None``: the loop's default executor); ``clock`` (seconds)
    times ``route_ms``; ``reroute_confidence`` is the classifier confidence that
    reroutes a conversation without a corroborating cue (rule 4). Safe to share across tasks and threads: it keeps no
    per-conversation state.
    """

    __slots__ = ("_batcher", "_classifier", "_clock", "_executor", "_lexicon", "_models", "_reroute_confidence")

    def __init__(
        self,
        classifier: Classifier,
        models: Mapping[str, str],
        *,
        executor: concurrent.futures.Executor | None = None,
        clock: Callable[[], float] = time.perf_counter,
        reroute_confidence: float = 0.8,
        batching: BatchSettings | None = None,
    ) -> None:
        missing = [uc for uc in USE_CASES if uc not in models]
        unknown = sorted(set(models) - USE_CASE_SET)
        if missing or unknown:
            raise ValueError(f"models must map exactly {list(USE_CASES)}; missing {missing}, unknown {unknown}")
        self._classifier = classifier
        self._lexicon = classifier.lexicon
        self._models = {uc: models[uc] for uc in USE_CASES}
        self._executor = executor
        self._clock = clock
        self._reroute_confidence = reroute_confidence
        self._batcher = None
        if batching is not None:
            batch = classifier if isinstance(classifier, BatchClassifier) else _RowByRow(classifier)
            self._batcher = ClassifierBatcher(batch, batching, executor)

    @property
    def batcher(self) -> ClassifierBatcher | None:
        """The arrival batcher (``batching=`` given), for its ``stats``; else ``None``."""
        return self._batcher

    @property
    def models(self) -> Mapping[str, str]:
        return dict(self._models)

    def signals(self, text: str, attachment_kinds: Sequence[str], context: Mapping[str, object] | None) -> Signals:
        """``extract_signals`` with this router's cue lexicon."""
        return extract_signals(text, attachment_kinds, context, self._lexicon)

    def decide_bypass(self, state: RouteState, signals: Signals) -> bool:
        """True when ``signals`` add nothing to ``state``'s basis (rule 3); pure, microseconds."""
        if not state.bypass_enabled or signals.context_key != state.basis_context_key:
            return False
        if not signals.modalities <= state.basis_modalities:
            return False
        basis = state.basis_cues
        for cue in signals.cues:
            if cue not in basis and cue != state.use_case:
                return False
        return True

    async def route(
        self,
        state: RouteState | None,
        text: str,
        attachment_kinds: Sequence[str],
        context: Mapping[str, object] | None,
    ) -> RouteDecision:
        """Decide where this message goes; see the module docstring for the rules."""
        start = self._clock()
        override = parse_override(context)
        signals = extract_signals(text, attachment_kinds, context, self._lexicon)
        ctx_hash = _full_context_hash(context, signals.context_key)
        if override is not None:
            return self._settle(state, signals, override, 1.0, None, ctx_hash, start)
        if state is not None and self.decide_bypass(state, signals):
            model_id = self._models[state.use_case]
            if state.context_hash != ctx_hash or state.model_id != model_id:
                state = dataclasses.replace(state, context_hash=ctx_hash, model_id=model_id)
            route_ms = (self._clock() - start) * 1000.0
            return RouteDecision("bypass", state.use_case, model_id, state.confidence, False, route_ms, None, state)
        if signals.modalities & MEDIA_MODALITIES:
            return self._settle(state, signals, "multimodal", 1.0, None, ctx_hash, start)
        if self._batcher is None:
            loop = asyncio.get_running_loop()
            verdict: Classification | None = await loop.run_in_executor(
                self._executor, self._classifier.classify, text)
        else:
            verdict = await self._batcher.classify(text)
        if verdict is None:  # the classifier queue is full: route by the fast signals
            return self._fast(state, signals, ctx_hash, start)
        use_case, confidence = verdict.use_case, verdict.confidence
        if (
            state is not None
            and use_case != state.use_case
            and use_case not in signals.cues
            and confidence < self._reroute_confidence
        ):
            use_case, confidence = state.use_case, state.confidence
        return self._settle(state, signals, use_case, confidence, verdict.elapsed_ms, ctx_hash, start)

    def _settle(
        self,
        state: RouteState | None,
        signals: Signals,
        use_case: str,
        confidence: float,
        classifier_ms: float | None,
        ctx_hash: str,
        start: float,
    ) -> RouteDecision:
        model_id = self._models[use_case]
        decision: Decision
        if state is not None and use_case == state.use_case:
            decision = "bypass"
            changed = not self._within_basis(state, signals)
            new_state = RouteState(
                use_case=use_case,
                model_id=model_id,
                confidence=confidence,
                context_hash=ctx_hash,
                basis_modalities=state.basis_modalities | signals.modalities,
                basis_cues=state.basis_cues | signals.cues | {use_case},
                basis_context_key=signals.context_key,
                bypass_enabled=state.bypass_enabled,
            )
        else:
            decision = "full" if state is None else "reroute"
            changed = state is not None and not self._within_basis(state, signals)
            new_state = RouteState(
                use_case=use_case,
                model_id=model_id,
                confidence=confidence,
                context_hash=ctx_hash,
                basis_modalities=signals.modalities,
                basis_cues=signals.cues | {use_case},
                basis_context_key=signals.context_key,
                bypass_enabled=True if state is None else state.bypass_enabled,
            )
        route_ms = (self._clock() - start) * 1000.0
        return RouteDecision(decision, use_case, model_id, confidence, changed, route_ms, classifier_ms, new_state)

    def _fast(self, state: RouteState | None, signals: Signals, ctx_hash: str, start: float) -> RouteDecision:
        """Decision ``"fast"``: a first message goes where ``fast_use_case`` says (confidence 0,
        basis from its signals); a later one keeps its route and its basis unchanged, so what
        was new in it is classified again with the next message that carries it."""
        if state is None:
            return dataclasses.replace(
                self._settle(None, signals, fast_use_case(signals.cues), 0.0, None, ctx_hash, start), decision="fast")
        model_id = self._models[state.use_case]
        if state.model_id != model_id:
            state = dataclasses.replace(state, model_id=model_id)
        changed = not self._within_basis(state, signals)
        route_ms = (self._clock() - start) * 1000.0
        return RouteDecision("fast", state.use_case, model_id, state.confidence, changed, route_ms, None, state)

    @staticmethod
    def _within_basis(state: RouteState, signals: Signals) -> bool:
        return (
            signals.context_key == state.basis_context_key
            and signals.modalities <= state.basis_modalities
            and all(c in state.basis_cues or c == state.use_case for c in signals.cues)
        )
