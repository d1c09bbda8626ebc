"""The router's contract module and the gateway import without the classifier's heavy dependencies."""

from __future__ import annotations

import subprocess
import sys


def test_gateway_and_router_types_import_without_onnxruntime() -> None:
    code = (
        "import sys, rtserver.routing.contract, rtserver.routing.router, rtserver.server.app\n"
        "print(','.join(m for m in ('onnxruntime', 'numpy', 'tokenizers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_classifier_module_defers_onnxruntime_to_make_session() -> None:
    code = "import sys, rtserver.routing.classifier as c; c.make_session; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # not at import: only make_session loads it
