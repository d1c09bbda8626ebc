"""The wire protocol, free of I/O: frame records, codecs, validation, stats.

Nothing in this package imports asyncio, redis, websockets or onnxruntime
(tests/unit/protocol/test_purity.py enforces it).
"""
