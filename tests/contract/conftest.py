"""Contract fixtures: a real redis-server (skips when the binary is missing)."""

from __future__ import annotations

from tests.redis_server import redis_factory, redis_prefix, redis_server

__all__ = ["redis_factory", "redis_prefix", "redis_server"]
