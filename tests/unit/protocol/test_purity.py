"""The protocol core does no I/O: importing it pulls in no asyncio, websockets, redis or onnxruntime."""

from __future__ import annotations

import subprocess
import sys


def test_protocol_package_imports_no_io_libraries() -> None:
    code = (
        "import sys\n"
        "import rtserver.protocol.codec, rtserver.protocol.frames, rtserver.protocol.conversation, "
        "rtserver.protocol.stats, rtserver.protocol.machine, rtserver.protocol.events, rtserver.protocol.actions, "
        "rtserver.protocol.replay\n"
        "bad = [m for m in ('asyncio', 'websockets', 'redis', 'onnxruntime', 'openvino_genai') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_conversation_machine_reads_no_clock_and_starts_nothing() -> None:
    """Time comes in the events; the machine module imports neither time nor asyncio nor threading."""
    import rtserver.protocol.actions as actions
    import rtserver.protocol.events as events
    import rtserver.protocol.machine as machine
    import rtserver.protocol.replay as replay

    for module in (machine, events, actions, replay):
        names = set(vars(module))
        assert not names & {"time", "asyncio", "threading", "socket", "random", "secrets"}, module.__name__
