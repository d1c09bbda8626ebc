"""Model workers: the wire between gateway and worker, the worker process, its engine
host (host.py, runner.py), and the gateway side (client per worker, pool that pins
conversations)."""
