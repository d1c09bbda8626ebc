"""The asyncio shell: lifespan (app.py), sockets (connection.py), HTTP routes (http.py)."""
