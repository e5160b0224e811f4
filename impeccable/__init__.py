"""impeccable: IMPECCABLE-style drug-discovery campaigns on a pilot runtime.

The science lives in ``impeccable.stages`` and the execution layer in
``impeccable.runtime``. In the repository those are the top-level folders
``stages/`` and ``runtime/``; the install (always ``pip install -e``, see the
README) maps them into this package.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``impeccable.hits(run_dir)``: the ranked hits as a DataFrame (imported on first use)."""
    if name == "hits":
        from .watch import hits

        return hits
    raise AttributeError(f"module 'impeccable' has no attribute {name!r}")
