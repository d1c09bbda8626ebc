"""The JavaScript client (clients/js) against live gateways: runs its Node tests.

They start real ``rtserver serve`` processes with this interpreter (conversation in
JSON and msgpack, cancel, a killed socket resumed exactly once, a gateway restart with
two gateways sharing a real redis-server, token refresh under a short-lived token);
see clients/js/test/client.test.mjs. ``npm pack`` must ship the README and the types.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"


@pytest.fixture(scope="module")
def node() -> str:
    path = require("node")
    if not (JS / "node_modules" / "ws").is_dir():
        msg = "clients/js dependencies are not installed: run `npm ci` in clients/js"
        if os.environ.get("RTSERVER_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def test_node_client_tests_pass(node: str) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    redis = shutil.which("redis-server")
    if redis is None and os.environ.get("RTSERVER_REQUIRE_SERVICES") == "1":
        pytest.fail("redis-server is not installed; the two-gateway test would be skipped")
    proc = subprocess.run([node, "--test", "--test-reporter=spec", "test/client.test.mjs"], cwd=JS, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "fail 0" in proc.stdout


def test_npm_pack_ships_readme_types_and_code(node: str, tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    out = subprocess.run([npm, "pack", "--json", "--pack-destination", str(tmp_path)], cwd=JS,
                         capture_output=True, text=True, timeout=120, check=True)
    name = json.loads(out.stdout)[0]["filename"]
    with tarfile.open(tmp_path / name) as tar:
        files = set(tar.getnames())
    assert {"package/README.md", "package/package.json", "package/src/index.js", "package/src/index.d.ts",
            "package/src/msgpack.js", "package/src/msgpack.d.ts"} <= files
    assert not any("/test/" in f or "node_modules" in f for f in files)
