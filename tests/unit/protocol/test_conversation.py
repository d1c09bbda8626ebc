from __future__ import annotations

import pytest

from rtserver.codes import ErrorCode
from rtserver.exceptions import ProtocolError
from rtserver.protocol.conversation import Conversation, State
from rtserver.protocol.frames import Cancel, Hello, Message


def test_one_response_at_a_time() -> None:
    c = Conversation()
    c.admit(Hello())
    c.opened()
    c.admit(Message(id="m1", text="hi"))
    c.start_response("r1")
    with pytest.raises(ProtocolError) as info:
        c.admit(Message(id="m2", text="again"))
    assert info.value.code == ErrorCode.BUSY and info.value.ref == "m2"
    c.admit(Cancel())
    c.admit(Cancel(response_id="r1"))
    c.finish_response()
    assert c.state is State.OPEN
    c.admit(Message(id="m2", text="again"))


def test_hello_only_first_and_cancel_needs_a_response() -> None:
    c = Conversation()
    c.opened()
    with pytest.raises(ProtocolError) as info:
        c.admit(Hello())
    assert info.value.code == ErrorCode.HELLO_NOT_FIRST
    with pytest.raises(ProtocolError) as info:
        c.admit(Cancel())
    assert info.value.code == ErrorCode.NOTHING_TO_CANCEL
    c.start_response("r1")
    with pytest.raises(ProtocolError):
        c.admit(Cancel(response_id="r0"))
