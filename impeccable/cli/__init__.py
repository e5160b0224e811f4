"""The ``impeccable`` command line: argument parsing over the library (``impeccable.api`` for campaigns).

``main.py`` builds the parser and runs the benchmarks and ``validate``; ``commands.py`` has the campaign
commands (run, status, report, export, prune) and registers the ones that live with their code (compare,
emulate, model, benchmark); ``library.py`` is ``impeccable library``, ``resources.py`` ``impeccable resources``.
"""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
