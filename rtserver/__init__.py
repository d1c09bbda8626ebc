"""rtserver: a realtime conversation server.

One WebSocket per conversation; the first message is routed by an ONNX intent
classifier, later ones bypass routing and go straight to the model worker pinned
to the conversation. See docs/architecture.md.
"""

__version__ = "0.1.0"
