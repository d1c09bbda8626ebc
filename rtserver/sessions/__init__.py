"""Session storage: one interface (base.py), in-memory and Redis backends."""
