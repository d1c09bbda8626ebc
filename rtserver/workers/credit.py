"""Per-stream flow control, the consumer's side (docs/worker-protocol.md, "Flow control").

A stream with a window ``W`` has at most ``W`` ``tok`` frames that its consumer has
not acknowledged; the producer (a worker, or ``LocalWorker``) stops the stream there
and goes on as credit comes back. ``Credit`` counts what the consumer holds and returns
credit to the producer in batches of at least half a window.
"""

from __future__ import annotations

from collections.abc import Callable


class Credit:
    """The consumer's side of one stream's window.

    ``outstanding`` counts ``tok`` frames received and not yet acknowledged; the
    producer stops the stream when it reaches ``window``. ``ack(n)`` returns credit, in
    batches of at least half a window (one ``grant(n)`` call per batch).
    """

    __slots__ = ("_grant", "_owed", "acked", "outstanding", "window")

    def __init__(self, window: int, grant: Callable[[int], None]) -> None:
        self.window = window
        self._grant = grant
        self._owed = 0
        self.outstanding = 0
        self.acked = 0  # ever acknowledged: progress, for a stall watch

    @property
    def paused(self) -> bool:
        return self.outstanding >= self.window

    def ack(self, n: int = 1) -> None:
        self.outstanding = max(0, self.outstanding - n)
        self.acked += n
        self._owed += n
        if self._owed * 2 >= self.window:
            owed, self._owed = self._owed, 0
            self._grant(owed)
