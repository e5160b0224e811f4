"""Progress of a running campaign, per stage and round: the counts, and bars drawn with rich."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressView:
    """Receives ``update(stage, StageProgress)`` from the campaign runner; rich redraws on its own thread."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
        )
        self.bars: dict[str, Any] = {}

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, stage: str, p: Any) -> None:
        failed = f"[red]{p.failed} failed" if p.failed else ""
        if stage not in self.bars:
            self.bars[stage] = self.progress.add_task(stage, total=p.total or None, failed=failed)
        self.progress.update(
            self.bars[stage], total=max(p.total, p.done + p.failed) or None, completed=p.done + p.failed, failed=failed
        )


@dataclasses.dataclass
class StageProgress:
    total: int = 0
    done: int = 0
    failed: int = 0


class CampaignProgress:
    """Counts per stage (compounds or tasks), shown by a view with ``update(stage, StageProgress)`` if any."""

    def __init__(self, view: Any = None) -> None:
        self.view = view
        self.stages: dict[str, StageProgress] = {}

    def tick(self, stage: str, done: int = 0, failed: int = 0, total: int = 0) -> None:
        p = self.stages.setdefault(stage, StageProgress())
        p.total += total
        p.done += done
        p.failed += failed
        if self.view is not None:
            self.view.update(stage, p)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {name: dataclasses.asdict(p) for name, p in self.stages.items()}

    def __enter__(self) -> CampaignProgress:
        if self.view is not None:
            self.view.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.view is not None:
            self.view.__exit__(*exc)
