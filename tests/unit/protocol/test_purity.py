"""The protocol core does no I/O: importing it pulls in no asyncio, websockets, redis or onnxruntime."""

from __future__ import annotations

import subprocess
import sys


def test_protocol_package_imports_no_io_libraries() -> None:
    code = (
        "import sys\n"
        "import rtserver.protocol.codec, rtserver.protocol.frames, rtserver.protocol.conversation, "
        "rtserver.protocol.stats\n"
        "bad = [m for m in ('asyncio', 'websockets', 'redis', 'onnxruntime', 'openvino_genai') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
