"""web/rtchat.js embeds a generated copy of the JavaScript client (clients/js/src/index.js),
so the widget keeps one script tag and one connection implementation. The copy must be
fresh: regenerate it with ``node clients/js/scripts/inline.mjs``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]


def test_the_widgets_copy_of_rtclient_is_fresh() -> None:
    node = require("node")
    proc = subprocess.run([node, "clients/js/scripts/inline.mjs", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_widget_connects_only_through_rtclient() -> None:
    widget = (ROOT / "web" / "rtchat.js").read_text()
    start, end = widget.index("// >>> rtclient"), widget.index("// <<< rtclient")
    outside = widget[:start] + widget[end:]
    assert "new WebSocket(" not in outside and "new rtclient.RtClient(" in outside
