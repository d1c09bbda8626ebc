"""The widget's JavaScript modules (web/src/) under Node's own test runner.

web/test/*.test.mjs test the pure parts with plain values: the markdown renderer (its output,
its safety against markup and script links, and that the incremental renderer used while
streaming ends where a full render does, for every split of sample answers), the conversation
machine (frames, closes, resume, queue, stop), the store, the badge and the build. The built
one-file widget, web/rtchat.js, must be what ``node web/build.mjs`` makes of the sources.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "web" / "test").glob("*.test.mjs"))


def test_widget_module_tests_pass() -> None:
    node = require("node")
    assert TESTS, "no web/test/*.test.mjs"
    proc = subprocess.run([node, "--test", "--test-reporter=spec", *TESTS], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "fail 0" in proc.stdout


def test_built_widget_is_fresh() -> None:
    node = require("node")
    proc = subprocess.run([node, "web/build.mjs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
