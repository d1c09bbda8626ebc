"""The per-socket conversation state machine; pure.

States: ``NEW`` (no frame yet) → ``OPEN`` (session frame sent) ⇄ ``STREAMING``
(one response active). The connection shell feeds every decoded client frame to
:meth:`Conversation.admit`, which either accepts it or raises ``ProtocolError``.
After an accepted ``Message`` the shell must call :meth:`start_response`, and
:meth:`finish_response` when that response's ``done`` frame is sent.
"""

from __future__ import annotations

import enum

from rtserver.codes import ErrorCode
from rtserver.exceptions import ProtocolError
from rtserver.protocol.frames import Cancel, ClientFrame, Hello, Message


class State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    STREAMING = "streaming"


class Conversation:
    __slots__ = ("active_response", "responses", "state")

    def __init__(self) -> None:
        self.state = State.NEW
        self.active_response: str | None = None
        self.responses = 0

    @property
    def needs_session(self) -> bool:
        """True until the ``session`` frame has been sent."""
        return self.state is State.NEW

    def opened(self) -> None:
        """The ``session`` frame was sent."""
        if self.state is State.NEW:
            self.state = State.OPEN

    def admit(self, frame: ClientFrame) -> None:
        """Accept ``frame`` in the current state or raise ``ProtocolError``."""
        if isinstance(frame, Hello) and self.state is not State.NEW:
            raise ProtocolError(ErrorCode.HELLO_NOT_FIRST, "'hello' is only valid as the first frame")
        if isinstance(frame, Message) and self.state is State.STREAMING:
            raise ProtocolError(
                ErrorCode.BUSY,
                f"response {self.active_response} is still streaming; cancel it first",
                ref=frame.id,
            )
        if isinstance(frame, Cancel):
            if self.active_response is None:
                raise ProtocolError(ErrorCode.NOTHING_TO_CANCEL, "no response is streaming")
            if frame.response_id is not None and frame.response_id != self.active_response:
                raise ProtocolError(
                    ErrorCode.NOTHING_TO_CANCEL, f"response {frame.response_id[:64]} is not the active one"
                )

    def start_response(self, response_id: str) -> None:
        """An accepted message's response, ``response_id``, begins streaming."""
        self.responses += 1
        self.active_response = response_id
        self.state = State.STREAMING

    def finish_response(self) -> None:
        self.active_response = None
        self.state = State.OPEN
