"""Contract fixtures: a real redis-server (skips when the binary is missing)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared helpers

from redis_server import redis_factory, redis_prefix, redis_server

__all__ = ["redis_factory", "redis_prefix", "redis_server"]
