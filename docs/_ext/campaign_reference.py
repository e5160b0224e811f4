"""``{campaign-reference}`` in a MyST page: the campaign-file reference (:mod:`campaign_keys`), generated at
build time from the pydantic models in ``impeccable/config.py`` and parsed as Markdown in place."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from campaign_keys import options_markdown, reference_markdown
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class CampaignReference(SphinxDirective):
    """``{campaign-reference}``: the tables, parsed as MyST Markdown in place."""

    def run(self) -> list[nodes.Node]:
        from impeccable import config

        self.env.note_dependency(inspect.getsourcefile(config))
        text = reference_markdown(config.Campaign, Path(inspect.getsourcefile(config)))
        container = nodes.container()
        self.state.nested_parse(
            StringList(text.splitlines(), source="impeccable/config.py"),
            self.content_offset,
            container,
            match_titles=True,
        )
        return container.children


class BackendOptions(SphinxDirective):
    """``{backend-options}``: each backend's options (``runtime/backends/options.py``), as tables."""

    def run(self) -> list[nodes.Node]:
        from impeccable.runtime.backends import options

        source = Path(inspect.getsourcefile(options))
        self.env.note_dependency(str(source))
        container = nodes.container()
        text = options_markdown(options.OPTIONS, source)
        self.state.nested_parse(StringList(text.splitlines(), source=str(source)), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("campaign-reference", CampaignReference)
    app.add_directive("backend-options", BackendOptions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
