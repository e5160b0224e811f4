"""Progress bars for a running campaign, one per stage and round (rich)."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressView:
    """Receives ``update(stage, StageProgress)`` from the campaign runner; rich redraws on its own thread."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"), TimeElapsedColumn(),
        )
        self.bars: dict[str, Any] = {}

    def __enter__(self) -> "ProgressView":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, stage: str, p: Any) -> None:
        failed = f"[red]{p.failed} failed" if p.failed else ""
        if stage not in self.bars:
            self.bars[stage] = self.progress.add_task(stage, total=p.total or None, failed=failed)
        self.progress.update(self.bars[stage], total=max(p.total, p.done + p.failed) or None,
                             completed=p.done + p.failed, failed=failed)
