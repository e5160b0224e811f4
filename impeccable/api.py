"""The Python API: load a campaign, run it, open a run directory and read what it found.

Everything the ``impeccable`` command does with a campaign, a notebook or a
script does with three calls (the command line is a thin shell over them)::

    import impeccable

    campaign = impeccable.load_campaign("campaigns/demo.toml")
    run = impeccable.run_campaign(campaign, "runs/demo")   # or impeccable.open_run("runs/demo")
    run.status().stages                                     # results per stage
    run.hits().head()                                       # the ranked hits, a pandas DataFrame
    run.report()                                            # runs/demo/report/index.html
    run.export(top=50)                                      # hits.csv/.sdf and the diverse picks

A run directory is the whole state of a campaign: :func:`run_campaign` on a
directory that already holds results resumes it (nothing computed runs
again), and a :class:`Run` only reads it (the run computes every result, the
pose checks included), so it can be opened beside a campaign that is still running.

Errors are exceptions a caller can catch: :class:`~impeccable.config.CampaignError`
(a campaign that cannot be used, naming the file or dict and the key),
:class:`~impeccable.inputs.CampaignInputError` (library or receptor unusable;
nothing started), :class:`~impeccable.lock.RunDirBusy` (another live run holds
the directory), :class:`~impeccable.campaign.CampaignInterrupted` (Ctrl-C or
SIGTERM; what was computed is kept), ``FileNotFoundError`` (no run there) and
``ValueError`` (bad ``[hits]`` overrides).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config import Campaign, campaign_from_dict
from .config import load_campaign as _load_campaign_file

if TYPE_CHECKING:
    import pandas

    from .config import HitsSection
    from .results import Hit, RunStatus
    from .runtime import Pilot
    from .store import Store

__all__ = ["Exported", "ProgressSink", "Run", "load_campaign", "open_run", "run_campaign"]

CampaignSource = Campaign | str | os.PathLike[str] | Mapping[str, Any]


class ProgressSink(Protocol):
    """What :func:`run_campaign` reports progress to: ``update(stage, p)`` with ``p.total``, ``p.done`` and
    ``p.failed`` (compounds, or tasks for training) each time a stage moves. A sink that is also a context
    manager is entered for the duration of the run (``impeccable.progress.ProgressView`` draws bars)."""

    def update(self, stage: str, p: Any) -> None: ...


def load_campaign(source: CampaignSource, *, base_dir: str | os.PathLike[str] | None = None) -> Campaign:
    """A validated campaign from a TOML file, or from a dict shaped like one (as a notebook builds it).

    Relative paths in a file are relative to the file's folder; in a dict, to ``base_dir`` (default: the
    working directory). A :class:`~impeccable.config.Campaign` is returned as it is. Raises
    :class:`~impeccable.config.CampaignError` naming the file (or "campaign") and the key.
    """
    if isinstance(source, Campaign):
        return source
    if isinstance(source, Mapping):
        return campaign_from_dict(source, Path(base_dir) if base_dir is not None else Path.cwd())
    return _load_campaign_file(source)


def run_campaign(
    campaign: CampaignSource,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    pilot: Pilot | None = None,
    progress: ProgressSink | bool | None = None,
) -> Run:
    """Run (or resume) ``campaign`` into ``run_dir`` and return the finished :class:`Run`.

    ``run_dir`` defaults to the campaign's ``campaign.run_dir`` (else ``runs/<name>``). ``pilot``: a
    :class:`~impeccable.runtime.Pilot` you built (your own allocation or routes) instead of the one the
    campaign's ``[pilot]`` section describes; the run starts it and shuts it down. ``progress``: ``True``
    draws progress bars on the terminal, or pass a :class:`ProgressSink`.

    Tasks that fail do not stop the campaign: their compounds are recorded as failed and
    ``run.status().failed_tasks`` lists them. Ctrl-C raises
    :class:`~impeccable.campaign.CampaignInterrupted` with every finished result kept: call again to resume.
    """
    from .campaign import CampaignRunner

    campaign = load_campaign(campaign)
    folder = campaign.run_dir(run_dir)
    view: Any = None
    if progress is True:
        from .progress import ProgressView

        view = ProgressView()
    elif progress:
        view = progress
    entered = view if hasattr(view, "__enter__") else contextlib.nullcontext()
    with entered:
        CampaignRunner(campaign, folder, progress=view, pilot=pilot).run()
    return Run(folder)


def open_run(run_dir: str | os.PathLike[str]) -> Run:
    """The run directory ``run_dir`` (finished, interrupted or still running), to read its results.
    Raises ``FileNotFoundError`` if no campaign has run there."""
    run = Run(Path(run_dir))
    run._store().close()  # refuse a folder without a run now, not at the first read
    return run


@dataclass(frozen=True)
class Exported:
    """What :meth:`Run.export` wrote."""

    hits_csv: Path
    hits_sdf: Path
    diverse_csv: Path
    diverse_sdf: Path
    n_hits: int  # ranked compounds written to hits.csv/.sdf
    n_diverse: int  # diverse picks, one per ECFP4 cluster
    notes: list[str]  # what could not be computed (no receptor, no hinge binder ...), and why


class Run:
    """One run directory, read through its store. Each call opens the store read-only and closes it again
    (every result, PoseBusters' verdicts included, is computed by the run), so a ``Run`` can be kept in a
    notebook and called again while the campaign goes on."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"Run({str(self.run_dir)!r})"

    def status(self) -> RunStatus:
        """Sessions, results per stage, task states, the last session's failed tasks and stall reports."""
        from .results import run_status

        with self._reading() as store:
            return run_status(store, self.run_dir)

    def hits(self, top: int | None = None) -> pandas.DataFrame:
        """The ranked hits, best first, as a pandas DataFrame indexed by compound id: MM/GBSA where it exists
        decides the order, then the Vina score (kcal/mol). ``top``: only the best N."""
        from .watch import hits

        return hits(self.run_dir, top)

    def ranked(self, top: int | None = None) -> list[Hit]:
        """The same ranking as plain records (:class:`~impeccable.results.Hit`), for code without pandas."""
        from .results import ranked_hits

        with self._reading() as store:
            hits = ranked_hits(store)
        return hits[:top] if top else hits

    def hit_settings(self, hinge: list[str] | None = None, require_hinge: bool | None = None) -> HitsSection:
        """The run's ``[hits]`` settings with these overrides; ``ValueError`` naming the problem if they are bad."""
        with self._reading() as store:
            return self._settings(store, hinge, require_hinge)

    def report(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        hinge: list[str] | None = None,
        require_hinge: bool | None = None,
    ) -> Path:
        """Write the HTML report (default ``RUN_DIR/report/index.html``) and return its path; ``hinge`` and
        ``require_hinge`` override the run's ``[hits]`` settings for this report only."""
        from .report import write_report

        self.hit_settings(hinge, require_hinge)  # bad overrides are refused before any work
        return write_report(self.run_dir, out, hinge=hinge, require_hinge=require_hinge)

    def export(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        top: int | None = None,
        hinge: list[str] | None = None,
        require_hinge: bool | None = None,
    ) -> Exported:
        """Write the ranked hits (``hits.csv``/``hits.sdf``: scores, poses, interactions, clusters) and the
        diverse picks (``diverse.csv``/``diverse.sdf``) into ``out`` (default ``RUN_DIR/export``)."""
        from .picks import export_picks

        with self._reading() as store:
            settings = self._settings(store, hinge, require_hinge)
            paths, n, panel = export_picks(store, Path(out) if out else self.run_dir / "export", top, settings)
        return Exported(*paths, n_hits=n, n_diverse=len(panel.diverse), notes=list(panel.notes))

    # ------------------------------------------------------------------ helpers
    def _store(self) -> Store:
        from .store import Store

        return Store.open_existing(self.run_dir, readonly=True)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Store]:
        store = self._store()
        try:
            yield store
        finally:
            store.close()

    @staticmethod
    def _settings(store: Store, hinge: list[str] | None, require_hinge: bool | None) -> HitsSection:
        from .picks import hits_settings

        try:
            return hits_settings(store, hinge_residues=hinge, require_hinge_hbond=require_hinge)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise ValueError(f"[hits] settings: {exc}") from None
