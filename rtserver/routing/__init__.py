"""Intent routing with smart bypass.

* ``signals``: pure per-message signals (modalities, cue classes, context key).
* ``classifier``: the int8 ONNX intent classifier (``IntentClassifier``).
* ``batching``: ``ClassifierBatcher``, arrivals in padded batches behind a bounded queue.
* ``batchgraph``: the batch-safe (per-row quantised) copy of the int8 graph.
* ``router``: ``Router`` decides full / bypass / reroute / fast per message.
* ``train``: ``python -m rtserver.routing.train`` rebuilds ``rtserver/models/intent``.

This package imports nothing heavy itself: import the submodule you need
(``signals`` stays free of onnxruntime).
"""
