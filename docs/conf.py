"""Sphinx configuration of the impeccable documentation.

Build (the same command CI runs; warnings are errors):

    pip install -e '.[docs]'
    sphinx-build -W docs docs/_build

Pages are MyST Markdown. The campaign-file reference is generated at build time from the pydantic models in
``impeccable/config.py`` (``_ext/campaign_reference.py``); the API reference comes from the docstrings (autodoc).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import impeccable  # noqa: E402 - after the extension path

project = "impeccable"
author = "the impeccable developers"
copyright = "the impeccable developers, MIT licence"
release = version = impeccable.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "campaign_reference"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # "#a-heading" links to headings down to ###

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
# The science stack is imported only where a function runs, so autodoc needs none of it installed.
autodoc_mock_imports = ["rdkit", "vina", "meeko", "openmm", "torch", "dragon", "flux"]
nitpicky = False

html_theme = "furo"
html_title = f"impeccable {release}"
html_static_path: list[str] = []
