"""Pieces of the self-contained HTML pages (report, comparison): inlined images and plain tables."""

from __future__ import annotations

import base64
import html
from typing import Any


def img(png: bytes, alt: str) -> str:
    """A PNG inlined as base64, so the page opens offline."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(headers: list[str], rows: list[list[Any]], left: int = 0) -> str:
    """A table whose first ``left`` columns are left-aligned; cells are inserted as given (escape them first)."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def stage_table(per_stage: list[dict[str, Any]]) -> str:
    """Throughput per stage, as :func:`impeccable.plots.stage_throughput` measures it."""
    return table(["stage", "tasks", "span (s)", "tasks/s", "median runtime (s)", "core-seconds"],
                 [[html.escape(t["stage"]), t["tasks"], f"{t['span_s']:.1f}", f"{t['tasks_per_s']:.2f}",
                   f"{t['median_runtime_s']:.2f}", f"{t['core_s']:.0f}"] for t in per_stage], left=1)
