"""Dragon: the backend (``backend.py``), the authenticated socket to the server (``channel.py``) and the server that runs under the ``dragon`` launcher with its workers (``server.py``)."""
