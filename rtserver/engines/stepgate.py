"""Between two engine steps, the event loop runs until it has nothing left to do.

An engine that steps in a thread of its own and holds the GIL for the whole step
(openvino-genai's ``ContinuousBatchingPipeline.step()`` does) starves the event loop of
its process. Each time the loop lets the GIL go (to poll its sockets), the stepping
thread takes it and starts the next step, so the loop gets one short turn per step. A
``gen`` needs three turns on its way in (read the frame, start its task, queue the
request), and a token three on its way out (wake its stream, pack the frame, write the
batch), so each of them waited up to three steps. Measured on the engine host, 16 first
messages at once: the worker had every ``gen`` within 43 ms, and the engine took them
over the next 1.1 s, one step at a time (docs/BENCHMARKS.md, "The engine host's event
loop between steps").

``GatedLoop`` is asyncio's selector loop with a ``StepGate``. The stepping thread calls
``gate.wait()`` before each step: it waits, without the GIL, until the loop has run
every callback that was ready and every one those scheduled, and is about to block on
its selector; or until ``max_wait_s`` has passed, so that a loop that is never idle
cannot stop the engine. The engine host (rtserver/workers/host.py) runs on one; an
engine finds the gate with :func:`gate_of` on the loop it was started on, and steps
ungated anywhere else.
"""

from __future__ import annotations

import asyncio
import selectors
import threading
from collections.abc import Callable

MAX_WAIT_S = 0.05  # a loop that is still busy after this long waits for the next step


class StepGate:
    """The stepping thread's wait for an idle event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_wait_s: float = MAX_WAIT_S) -> None:
        self._loop = loop
        self._armed = False  # touched only on the loop's thread
        self._idle = threading.Event()
        self.max_wait_s = max_wait_s

    def wait(self) -> bool:
        """From the stepping thread: block until the loop is idle. False if it timed out or the loop is closed."""
        self._idle.clear()
        try:
            self._loop.call_soon_threadsafe(self._arm)
        except RuntimeError:  # the loop is closed
            return False
        return self._idle.wait(self.max_wait_s)

    def _arm(self) -> None:
        # Runs after every callback that was ready when wait() was called; the loop
        # then runs what those scheduled, and only then polls with a timeout.
        self._armed = True

    def about_to_block(self) -> None:
        """From the loop's thread: nothing is ready, the selector is about to wait."""
        if self._armed:
            self._armed = False
            self._idle.set()


class _IdleSelector(selectors.DefaultSelector):
    """The default selector, telling ``on_idle`` when the loop polls with a timeout (it has nothing ready)."""

    on_idle: Callable[[], None] | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if (timeout is None or timeout > 0) and self.on_idle is not None:
            self.on_idle()
        return super().select(timeout)


class GatedLoop(asyncio.SelectorEventLoop):
    """asyncio's selector event loop, with the ``StepGate`` of a process whose engine steps in a thread."""

    def __init__(self) -> None:
        selector = _IdleSelector()
        super().__init__(selector)
        self.step_gate = StepGate(self)
        selector.on_idle = self.step_gate.about_to_block


def gate_of(loop: asyncio.AbstractEventLoop) -> StepGate | None:
    """The gate of ``loop``, None for a loop without one (uvloop, the gateway's, a test's)."""
    return loop.step_gate if isinstance(loop, GatedLoop) else None
