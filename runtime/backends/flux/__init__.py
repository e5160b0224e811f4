"""Flux: the backend (``backend.py``), the Flux instances it starts (``instance.py``), the reactor that submits, holds and watches jobs (``reactor.py``, ``ahead.py``)."""
