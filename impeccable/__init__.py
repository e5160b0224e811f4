"""impeccable: IMPECCABLE-style drug-discovery campaigns on a pilot runtime.

The science lives in ``impeccable.stages`` and the execution layer in
``impeccable.runtime``. In the repository those are the top-level folders
``stages/`` and ``runtime/``; an install maps them into this package. When the
package is imported straight from a source checkout (``python -m`` from the
repository root puts the checkout first on ``sys.path``), the same mapping is
made here so that both layouts import identically.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_checkout = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "runtime").exists() and (_checkout / "runtime" / "__init__.py").exists():
    __path__.append(str(_checkout))  # type: ignore[name-defined]  # noqa: F821
