"""rtserver's WebSocket load tester: ``python -m loadtest --url ws://HOST:PORT/ws`` (or ``rtserver-load``).

Plays scripted multi-turn conversations (``loadtest/scenarios/*.jsonl``) over protocol
v1 with :mod:`rtserver.client`, and reports latency as the client saw it and as the
server's frame stats say, throughput, routing decisions and sequence integrity.
See docs/loadtest.md.
"""
