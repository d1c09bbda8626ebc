"""Model workers: the wire between gateway and worker, the worker process, and the
gateway side (client per worker, pool that pins conversations)."""
