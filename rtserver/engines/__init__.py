"""Model engines: one interface (base.py), one module per backend.

Engines know nothing of sockets or sessions. ``create_engine`` builds one by name.
"""
