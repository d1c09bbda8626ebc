"""Fixtures shared by the integration tests."""

from tests.integration.test_workers import workers  # noqa: F401  (the real worker processes fixture)
