"""Browser tests prepare themselves: when ``tests/e2e/node_modules`` lacks playwright-core,
``npm ci`` installs it (pinned by package-lock.json) before the first test of this folder.
Without npm, or when ``npm ci`` fails (no registry), the tests skip saying so (fail under
``RTSERVER_REQUIRE_SERVICES=1``, as every missing program does)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

HERE = Path(__file__).resolve().parent
NPM_CI_TIMEOUT_S = 600


@pytest.fixture(scope="session", autouse=True)
def playwright_core() -> Path:
    target = HERE / "node_modules" / "playwright-core"
    if target.is_dir():
        return target
    npm = shutil.which("npm")
    if npm is None:
        _skip("npm is not installed; it installs playwright-core for the widget tests once (apt-get install npm)")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True,
                          timeout=NPM_CI_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0 or not target.is_dir():
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        _skip(f"`npm ci` in tests/e2e could not install playwright-core: {why}")
    return target


def _skip(msg: str) -> NoReturn:
    if os.environ.get("RTSERVER_REQUIRE_SERVICES") == "1":
        pytest.fail(msg)
    pytest.skip(msg)
