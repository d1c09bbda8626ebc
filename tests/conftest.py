"""Shared fixtures. A test's folder says what it needs: unit (nothing), contract and
integration (real processes on loopback), e2e (a browser).

``require(binary)`` skips a test whose external program is missing — except under
``RTSERVER_REQUIRE_SERVICES=1`` (set by .ci/run), where it fails instead, so CI
never passes by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str) -> str:
    path = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if path is None:
        if os.environ.get("RTSERVER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{binary} is required (RTSERVER_REQUIRE_SERVICES=1) but not installed")
        pytest.skip(f"{binary} is not installed")
    return path
