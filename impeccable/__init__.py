"""impeccable: IMPECCABLE-style drug-discovery campaigns on a pilot runtime.

The Python API (:mod:`impeccable.api`)::

    import impeccable

    campaign = impeccable.load_campaign("campaigns/demo.toml")
    run = impeccable.run_campaign(campaign, "runs/demo")
    impeccable.open_run("runs/demo").hits().head()

The science lives in ``impeccable.stages`` and the execution layer in
``impeccable.runtime``. In the repository those are the top-level folders
``stages/`` and ``runtime/``; the install (always ``pip install -e``, see the
README) maps them into this package.

``import impeccable`` stays cheap: each name below is imported on first use.
"""

__version__ = "0.1.0"

# public name -> module it lives in (imported on first use, so that `import impeccable` loads nothing heavy)
_LAZY = {
    "load_campaign": "api",
    "run_campaign": "api",
    "open_run": "api",
    "Run": "api",
    "Exported": "api",
    "hits": "watch",
    "Campaign": "config",
    "CampaignError": "config",
    "RunStatus": "results",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    """The public API, imported on first use; ``impeccable.hits(run_dir)`` is ``open_run(run_dir).hits()``."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'impeccable' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
